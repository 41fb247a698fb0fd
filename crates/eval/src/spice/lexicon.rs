//! The hand-written word lists of the rule-based tagger: closed classes, the verbs and
//! adjectives of caption English, and the category lists SPICE 1.0 scores subsets with.
//!
//! Open-class words not listed here are nouns (WordNet, through METEOR's synonym data, only
//! supplies lemmas and synonyms: it carries no part of speech).

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;

/// SPICE's `Cardinality` subset: attributes that are one of these words.
pub const CARDINALITY_WORDS: [&str; 10] = ["one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"];

/// SPICE's `Color` subset.
pub const COLOR_WORDS: [&str; 18] = [
    "black", "brown", "blue", "red", "yellow", "pink", "gray", "grey", "green", "dark", "light", "white", "cream", "orange", "purple",
    "maroon", "beige", "violet",
];

/// SPICE's `Size` subset (the size adjectives of SPICE 1.0's tuple filter).
pub const SIZE_WORDS: [&str; 105] = [
    "baby",
    "illimitable",
    "scrawny",
    "beefy",
    "immeasurable",
    "short",
    "big",
    "immense",
    "sizable",
    "bony",
    "infinitesimal",
    "skeletal",
    "boundless",
    "lanky",
    "skimpy",
    "brawny",
    "large",
    "skinny",
    "broad",
    "lean",
    "slender",
    "bulky",
    "life-size",
    "slim",
    "chunky",
    "limitless",
    "small",
    "colossal",
    "little",
    "squat",
    "compact",
    "mammoth",
    "stocky",
    "corpulent",
    "massive",
    "stout",
    "cosmic",
    "meager",
    "strapping",
    "cubby",
    "measly",
    "sturdy",
    "curvy",
    "microscopic",
    "tall",
    "elfin",
    "mini",
    "teensy",
    "emaciated",
    "miniature",
    "teeny",
    "endless",
    "minuscule",
    "teeny-tiny",
    "enormous",
    "minute",
    "teeny-weeny",
    "epic",
    "narrow",
    "thick",
    "expansive",
    "obese",
    "thickset",
    "extensive",
    "outsized",
    "thin",
    "fat",
    "oversize",
    "tiny",
    "fleshy",
    "overweight",
    "titanic",
    "full-size",
    "paltry",
    "towering",
    "gargantuan",
    "petite",
    "trifling",
    "gaunt",
    "pint-size",
    "trim",
    "giant",
    "plump",
    "tubby",
    "gigantic",
    "pocket-size",
    "undersized",
    "grand",
    "portly",
    "underweight",
    "great",
    "pudgy",
    "unlimited",
    "heavy",
    "puny",
    "vast",
    "hefty",
    "rotund",
    "wee",
    "huge",
    "scanty",
    "whopping",
    "hulking",
    "scraggy",
    "wide",
];

const DETERMINERS: &str = "a an the this these those some each every another any no its his \
    her their my your our all both either neither whose";

/// Number words (CD); digits are numbers too.
const NUMBERS: &str = "one two three four five six seven eight nine ten eleven twelve thirteen \
    fourteen fifteen sixteen seventeen eighteen nineteen twenty thirty forty fifty hundred \
    thousand dozen";

/// Single-word prepositions.
const PREPOSITIONS: &str = "on in at with of near by under over behind beside besides across \
    along alongside through into onto from for above below around against inside outside \
    during between among amongst toward towards past about like atop underneath beneath within \
    without upon via beyond throughout amid after before except despite round aboard opposite \
    off down up out than per outta";

/// Multi-word prepositions, longest first (UD's multi-word `case`): they make one relation.
/// The middle word of a three-word one stays an object when it is a noun (`top`, `front`).
pub const MULTIWORD_PREPOSITIONS: &[&[&str]] = &[
    &["in", "front", "of"],
    &["on", "top", "of"],
    &["in", "place", "of"],
    &["in", "addition", "to"],
    &["in", "spite", "of"],
    &["on", "behalf", "of"],
    &["in", "case", "of"],
    &["as", "well", "as"],
    &["by", "means", "of"],
    &["next", "to"],
    &["out", "of"],
    &["close", "to"],
    &["because", "of"],
    &["ahead", "of"],
    &["away", "from"],
    &["according", "to"],
    &["instead", "of"],
    &["along", "with"],
    &["together", "with"],
    &["due", "to"],
    &["such", "as"],
    &["inside", "of"],
    &["outside", "of"],
    &["apart", "from"],
    &["aside", "from"],
    &["across", "from"],
    &["prior", "to"],
    &["near", "to"],
    &["off", "of"],
];

const CONJUNCTIONS: &str = "and or but nor &";

const PRONOUNS: &str = "he she it they him them we us i you me himself herself itself \
    themselves someone somebody something everyone everybody everything anyone anybody \
    anything nobody nothing";

const BE: &str = "is are was were be been being am 're 'm";

const AUXILIARIES: &str = "does do did can could will would may might should must shall 'll 'd";

/// Words that open a subordinate clause (`while` holding, `as` he turns).
const SUBORDINATORS: &str = "while as when where whilst because though although if so until \
    then whereas since";

const RELATIVES: &str = "who which whom";

const ADVERBS: &str = "very really just also still together nearby here almost nearly quite \
    too so only even well far away back forward forwards upside sideways alone ahead \
    not n't never always often sometimes currently again already soon now then perhaps maybe \
    possibly probably apparently seemingly rather somewhat extremely highly fairly pretty \
    closely all mostly partly partially completely fully slightly barely nicely neatly \
    outdoors indoors upstairs downstairs overhead underwater aboard abroad afar apart aside \
    else ever yet instead anyway either later home midair downhill uphill around about \
    straight high low side";

/// Adjectives of caption English (the size and colour lists are added to these).
const ADJECTIVES: &str = "colorful colourful bright large small big little tall short long old \
    young new empty full open closed clean dirty busy crowded huge tiny giant several many few \
    various multiple different other same next double single wild cute pretty beautiful nice \
    good great fresh hot cold warm cool wet dry sunny cloudy snowy rainy foggy grassy sandy \
    rocky dusty muddy leafy shady lush green overcast clear hazy stormy windy calm modern \
    antique vintage classic fancy plain simple ornate elegant rustic old-fashioned \
    old-style commercial public private professional personal residential urban rural \
    industrial domestic local main central upper lower top front rear left right middle \
    outdoor indoor high low deep shallow steep flat round square rectangular circular oval \
    narrow wide broad thick thin heavy light dark pale shiny glossy rusty broken damaged \
    ripe raw cooked fried baked grilled roasted toasted frozen fresh healthy delicious tasty \
    homemade sweet sour spicy white black red blue yellow brown gray grey orange pink purple \
    silver golden gold beige tan maroon violet cream navy teal turquoise multicolored \
    multi-colored striped spotted checkered plaid floral blond blonde bald bearded \
    elderly adult male female happy sad angry serious funny silly curious tired sleepy \
    hungry lonely friendly playful lazy busy quiet noisy loud calm peaceful scenic \
    picturesque rural remote huge enormous massive giant miniature mini tiny small short \
    tall little large big asian african american european chinese japanese indian mexican \
    italian french british english german electric digital wireless portable wooden \
    stainless steel-colored ceramic plastic-looking metallic leather wooden-style \
    concrete vast distant nearby far close near unusual strange odd interesting amazing \
    lovely gorgeous huge ugly nasty messy neat tidy cluttered organized abandoned \
    vacant unoccupied occupied available ready free cheap expensive rich poor famous \
    popular favorite traditional typical standard regular normal ordinary common rare \
    special unique real fake toy human whole half entire partial complete final first \
    second third last early late various numerous assorted similar identical matching \
    several own only main major minor total average overall extra additional other \
    another able unable alive dead asleep awake alert aware afraid alone alike upright \
    sideways upside-down straight curved curly wavy fluffy furry hairy woolly fuzzy soft \
    hard smooth rough sharp dull bare naked shirtless barefoot topless sleeveless \
    hooded short-sleeved long-sleeved sturdy fit strong weak fast slow quick busy \
    crowded packed jammed cozy comfortable spacious roomy cramped small-sized \
    medium-sized large-sized full-sized life-sized good-sized decent nice fine neat \
    adorable sweet cute handsome attractive pretty beautiful elegant stylish fashionable \
    formal casual sporty athletic sporting olympic skilled professional amateur \
    experienced expert junior senior minor major little grown grown-up teenage teen \
    middle-aged aged older younger bigger smaller larger taller shorter longer newer \
    higher lower closer biggest smallest largest tallest oldest youngest highest lowest \
    closest best worst better worse favorite dark-colored light-colored brightly-colored \
    dim dimly-lit lit well-lit unlit sunlit moonlit snow-covered tree-lined grass-covered \
    overgrown overhead nearby adjacent facial opposite parallel vertical horizontal diagonal \
    upward downward outward inward electronic mechanical manual automatic";

/// Base forms of verbs that occur in captions. A listed verb whose `-s` form is usually a
/// plural noun (`signs`, `lights`) is also in [`NOUN_DOMINANT_VERBS`].
const VERBS: &str = "sit stand ride walk look fly hold wear park drive take lay lie travel eat \
    play hang run smile go wait graze watch show come pose jump cross pass prepare pull talk \
    cook lean get carry move use set do work dine land read swim make sleep feed cut drink \
    rest race overlook point face paint climb stick board contain ski clean stare perform \
    load shop try include put have write slide float roll wade lead approach dance chase \
    herd wash fight kneel advertise swing hike smoke turn leave light attempt fish cover \
    laugh reach display brush touch feature fall kiss shine enjoy bend pet follow reflect \
    surround surf give stop miss open peek throw splash head skateboard sniff indicate pour \
    balance match say paddle hide row listen push trail fix gather enter check line soar \
    dive dry relax direct depict pop train pick arrive observe ascend catch water spray \
    unload skate shake tackle lounge lick flush mix hit fry shave grow blow wave sell \
    sparkle stir let bike snowboard hug stretch ripple exit span flip peel peer rise help \
    view bathe sew share drop flow fill serve carve tie draw chew tower sail interact crawl \
    consist type block wander operate describe study change tend billow dig speak lift \
    start await steer crouch bite leap peck spew hum embrace rappel sing meet mill hover \
    cruise taxi place step cycle descend compete photograph glide demonstrate reveal admire \
    hand transport celebrate rub twirl scratch stroll melt begin spread spin teach vend \
    camp tow appear extend glow text peep attend inspect protest snuggle roam bake groom \
    undergo emit adjoin visit release iron burn curve converse investigate perch bloom \
    clear examine guide measure repair explain chop grab kick toss swat pitch stack \
    decorate stuff dress attach mount crowd post close locate pave raise enclose remodel \
    abandon rust dock picture elevate chain lock organize design curl arrange equip install \
    connect suspend prop frame fold pile scatter mirror furnish blur pack illuminate spot \
    wrap damage renovate strip slant cap drape style weather strap crack bundle situate \
    adorn huddle expose call unite alter tape arch frost shade store destroy demolish \
    overturn focus finish name group stock nestle hook fade trim lower gate modify station \
    construct update glaze knock cobble number cage pierce mash bar restore power tip \
    cluster tone center litter tilt capture submerge crash bury link see hear feel think \
    seem keep find tell become mean build send bring buy win ring shoot break choose steal \
    tear swear pay meet grin beg fetch dangle rock bounce kneel squat jog sprint skip hop \
    lick gaze glance sip slice spread dip butter toast grill roast bake boil steam brew \
    scoop cuddle nap doze yawn bark growl chew nibble munch swallow bathe soak splash shower \
    rinse scrub wipe dust sweep mop vacuum wait queue gather huddle congregate assemble \
    march parade protest rally cheer clap wave applaud greet shake hug kiss hold grasp \
    clutch grip squeeze pinch tap knock press push shove drag haul lug tote cart wheel \
    pedal steer navigate maneuver swerve veer skid slide glide coast drift float bob paddle \
    row sail canoe kayak surf windsurf kitesurf parasail ski snowboard sled skate \
    skateboard rollerblade bowl golf bat pitch catch throw toss serve volley dribble shoot \
    dunk score kick head block tackle dodge duck jump leap hop skip bounce flip spin twirl \
    swing dangle hang perch roost nest hatch feed graze forage hunt stalk pounce chase \
    flee escape hide peek peer stare gaze look watch observe view see notice check inspect \
    examine study read browse type text talk chat speak whisper shout yell scream sing \
    hum whistle laugh giggle smile grin frown cry weep pose model display exhibit present \
    show reveal hide cover wrap unwrap open close lock unlock fill empty pour spill drip \
    leak flow stream gush spray sprinkle water wash dry hang fold iron sew knit stitch \
    weave braid comb brush cut trim shave style dress undress wear sport don remove \
    adjust fix repair mend build assemble construct erect demolish wreck crash collide \
    hit strike smash break crack shatter burst explode burn light ignite extinguish smoke \
    puff blow inflate deflate pump fuel charge plug unplug connect disconnect attach detach \
    rest relax lounge sunbathe tan recline slouch slump sprawl stretch yawn sleep nap \
    snooze wake rise arise awaken stand sit squat kneel crouch bend lean lie lay recline \
    prepare cook bake fry grill roast boil stir mix blend whisk chop slice dice peel \
    grate mash carve serve plate eat dine feast snack drink sip gulp taste lick bite chew \
    shop purchase buy sell return wrestle ski skateboard surf trade vend market advertise promote feature label sign \
    mark paint draw sketch color decorate frost ice garnish top sprinkle stuff";

/// Listed verbs whose ambiguous forms (`-s`, base) are read as nouns after a noun.
const NOUN_DOMINANT_VERBS: &str = "sign light wave leave line train plate board park court \
    track top cup glass pole tie box water ice frost tile fence wall picture photograph \
    chain cage frame mirror gate station bar number flower pipe taxi text bowl iron camp \
    bike ski skate surf snowboard skateboard fish herd head point face paint trail stripe \
    post tower vend name group stock power tip tone center litter hand cap strap style \
    weather shade store gate bundle spot pile prop cover crowd dress design match pet \
    rock bat golf sled canoe kayak cart wheel model label market sketch color toast \
    butter steam grill shower cycle block mill step ring shoot dust volley dunk score \
    lug coast drift plug tan snack dice plate feature type view rest slope yard file";

/// Words ending in `-ing` that are nouns.
const ING_NOUNS: &str = "building clothing ceiling painting ring king wing string swing \
    thing evening morning sibling pudding icing frosting topping stuffing bedding railing \
    awning sling spring ping wedding landing parking lighting flooring shelving plumbing \
    siding paneling lettering seating fencing tiling landscaping something nothing \
    everything anything during including dining living offering opening carving drawing \
    crossing setting bowling boxing sightseeing camping fishing skiing snowboarding surfing \
    skateboarding boarding piping trimming filling dressing hearing meeting gathering \
    marking sewing clearing heading pudding dumpling stocking sterling bling";

/// Words ending in `-ed` (or irregular past forms) that are not verbs.
const ED_NON_VERBS: &str = "bed red sled shed speed need feed seed weed reed breed steed \
    hundred sacred naked wicked rugged ragged jagged aged beloved learned crooked \
    shred hatred kindred sled moped bred fled";

/// Quantity nouns that make `a N of` a quantifier (`a couple of dogs`): the enhancer turns
/// them into a `qmod` of the noun instead of an object with an `of` relation.
const QUANTITY_NOUNS: &str = "lot assortment number couple bunch handful litany sheaf slew \
    dozen series variety multitude wad clutch wave mountain array spate string ton range \
    plethora heap sort form kind type version bit pair triple total";

/// Plural quantity words that make `N of` a quantifier (`lots of food`).
const PLURAL_QUANTITY_WORDS: &str = "lots many several plenty tons dozens multitudes \
    mountains loads pairs tens hundreds thousands millions billions";

/// Verb particles (`compound:prt`) when they end the verb phrase or precede a preposition.
const PARTICLES: &str = "up down out off away over back around on in";

/// Nouns that are plural without a plural ending.
const PLURAL_NOUNS: &str = "people cattle police";

/// Nouns whose plural is the singular.
const INVARIANT_PLURALS: &str = "sheep deer fish moose bison";

pub struct Lexicon {
    pub determiners: HashSet<&'static str>,
    pub numbers: HashSet<&'static str>,
    pub prepositions: HashSet<&'static str>,
    pub conjunctions: HashSet<&'static str>,
    pub pronouns: HashSet<&'static str>,
    pub be: HashSet<&'static str>,
    pub auxiliaries: HashSet<&'static str>,
    pub subordinators: HashSet<&'static str>,
    pub relatives: HashSet<&'static str>,
    pub adverbs: HashSet<&'static str>,
    pub adjectives: HashSet<&'static str>,
    pub verbs: HashSet<&'static str>,
    pub noun_dominant_verbs: HashSet<&'static str>,
    pub ing_nouns: HashSet<&'static str>,
    pub ed_non_verbs: HashSet<&'static str>,
    pub quantity_nouns: HashSet<&'static str>,
    pub plural_quantity_words: HashSet<&'static str>,
    pub particles: HashSet<&'static str>,
    pub plural_nouns: HashSet<&'static str>,
    pub invariant_plurals: HashSet<&'static str>,
    /// Irregular verb forms that WordNet's exception list may lack or spell as nouns.
    pub irregular_verbs: HashMap<&'static str, &'static str>,
}

fn set(words: &'static str) -> HashSet<&'static str> {
    words.split_whitespace().collect()
}

impl Lexicon {
    pub fn get() -> &'static Lexicon {
        static LEXICON: OnceLock<Lexicon> = OnceLock::new();
        LEXICON.get_or_init(Lexicon::build)
    }

    fn build() -> Lexicon {
        let mut adjectives = set(ADJECTIVES);
        adjectives.extend(COLOR_WORDS);
        adjectives.extend(SIZE_WORDS.iter().filter(|w| **w != "baby" && **w != "minute"));
        let irregular_verbs = [
            ("sat", "sit"),
            ("stood", "stand"),
            ("ran", "run"),
            ("rode", "ride"),
            ("ridden", "ride"),
            ("held", "hold"),
            ("hung", "hang"),
            ("wore", "wear"),
            ("worn", "wear"),
            ("ate", "eat"),
            ("eaten", "eat"),
            ("flew", "fly"),
            ("flown", "fly"),
            ("drove", "drive"),
            ("driven", "drive"),
            ("took", "take"),
            ("taken", "take"),
            ("made", "make"),
            ("went", "go"),
            ("gone", "go"),
            ("came", "come"),
            ("lay", "lie"),
            ("laid", "lay"),
            ("lain", "lie"),
            ("left", "leave"),
            ("lit", "light"),
            ("fell", "fall"),
            ("fallen", "fall"),
            ("threw", "throw"),
            ("thrown", "throw"),
            ("caught", "catch"),
            ("built", "build"),
            ("put", "put"),
            ("set", "set"),
            ("cut", "cut"),
            ("hit", "hit"),
            ("shot", "shoot"),
            ("saw", "see"),
            ("seen", "see"),
            ("got", "get"),
            ("gotten", "get"),
            ("gave", "give"),
            ("given", "give"),
            ("grew", "grow"),
            ("grown", "grow"),
            ("blew", "blow"),
            ("blown", "blow"),
            ("broke", "break"),
            ("broken", "break"),
            ("spread", "spread"),
            ("swam", "swim"),
            ("swung", "swing"),
            ("stuck", "stick"),
            ("brought", "bring"),
            ("bought", "buy"),
            ("sold", "sell"),
            ("found", "find"),
            ("kept", "keep"),
            ("led", "lead"),
            ("fed", "feed"),
            ("bit", "bite"),
            ("bitten", "bite"),
            ("hid", "hide"),
            ("hidden", "hide"),
            ("slid", "slide"),
            ("spun", "spin"),
            ("dug", "dig"),
            ("drew", "draw"),
            ("drawn", "draw"),
            ("shown", "show"),
            ("sewn", "sew"),
            ("tied", "tie"),
            ("lying", "lie"),
            ("tying", "tie"),
            ("dying", "die"),
            ("has", "have"),
            ("had", "have"),
            ("having", "have"),
            ("does", "do"),
            ("did", "do"),
            ("done", "do"),
            ("doing", "do"),
            ("goes", "go"),
        ]
        .into_iter()
        .collect();
        Lexicon {
            determiners: set(DETERMINERS),
            numbers: set(NUMBERS),
            prepositions: set(PREPOSITIONS),
            conjunctions: set(CONJUNCTIONS),
            pronouns: set(PRONOUNS),
            be: set(BE),
            auxiliaries: set(AUXILIARIES),
            subordinators: set(SUBORDINATORS),
            relatives: set(RELATIVES),
            adverbs: set(ADVERBS),
            adjectives,
            verbs: set(VERBS),
            noun_dominant_verbs: set(NOUN_DOMINANT_VERBS),
            ing_nouns: set(ING_NOUNS),
            ed_non_verbs: set(ED_NON_VERBS),
            quantity_nouns: set(QUANTITY_NOUNS),
            plural_quantity_words: set(PLURAL_QUANTITY_WORDS),
            particles: set(PARTICLES),
            plural_nouns: set(PLURAL_NOUNS),
            invariant_plurals: set(INVARIANT_PLURALS),
            irregular_verbs,
        }
    }
}
