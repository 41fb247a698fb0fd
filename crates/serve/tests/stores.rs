//! The embedded store (SQLite) and the shared one (PostgreSQL) keep the same contract: jobs,
//! recorded requests, feedback and pruning behave alike whichever the server runs on. The
//! PostgreSQL half starts a real server (see caption-serve-testkit::servers).

use caption_serve_testkit::servers::PostgresServer;

use caption_data::time::now_rfc3339;
use caption_serve::store::{JobRecord, JobState, NewFeedback, Pruned, RequestRecord, Store, StoreLocation};
use serde_json::json;

fn job(id: &str, image: &str) -> JobRecord {
    JobRecord {
        id: id.into(),
        client: Some("alice".into()),
        state: JobState::Queued,
        image_sha256: image.into(),
        options: json!({"beam_size": 2}),
        created_at: now_rfc3339(),
        started_at: None,
        finished_at: None,
        result: None,
        error: None,
    }
}

fn request(id: &str, image: &str) -> RequestRecord {
    RequestRecord {
        id: id.into(),
        image_sha256: image.into(),
        model: "tiny-v1".into(),
        captions: json!([{"text": "a", "confidence": 0.5}]),
        client: Some("k1".into()),
    }
}

fn state(store: &Store, id: &str) -> Option<JobState> {
    store.job(id).unwrap().map(|job| job.state)
}

fn count(store: &Store, state: JobState) -> u64 {
    store.job_counts().unwrap().into_iter().find(|(s, _)| *s == state).map(|(_, n)| n).unwrap()
}

/// What every store must do.
fn keeps_the_contract(store: &Store) {
    // Jobs: queued with their image, bounded, claimed oldest first and once.
    assert!(store.add_job(&job("j1", "img-j1"), "png", b"job one", 10).unwrap());
    assert!(!store.add_job(&job("j2", "img-j2"), "png", b"job two", 1).unwrap(), "the queue is full");
    let claimed = store.claim_jobs(5).unwrap();
    assert_eq!((claimed.len(), claimed[0].image.as_slice(), claimed[0].options["beam_size"].clone()), (1, b"job one".as_slice(), json!(2)));
    assert!(store.claim_jobs(5).unwrap().is_empty());
    // Delivered again (its replica died): still claimable while unfinished, not once finished.
    assert_eq!(store.claim_job("j1").unwrap().map(|j| j.client), Some(Some("alice".into())));
    store.finish_job("j1", Ok(json!({"captions": []}))).unwrap();
    assert!(store.claim_job("j1").unwrap().is_none());
    assert!(store.claim_job("unknown").unwrap().is_none());
    let finished = store.job("j1").unwrap().unwrap();
    assert_eq!((finished.state, finished.result.is_some(), finished.finished_at.is_some()), (JobState::Succeeded, true, true));
    // A job the queue refused is removed; a busy model's job goes back to the queue.
    assert!(store.add_job(&job("j3", "img-j3"), "png", b"job three", 10).unwrap());
    store.remove_job("j3").unwrap();
    assert_eq!(state(store, "j3"), None);
    assert!(store.add_job(&job("j4", "img-j4"), "png", b"job four", 10).unwrap());
    assert_eq!(store.claim_jobs(1).unwrap()[0].id, "j4");
    store.requeue("j4").unwrap();
    assert_eq!((count(store, JobState::Queued), count(store, JobState::Succeeded)), (1, 1));

    // Requests: the newest `retain` are kept, plus any that feedback names; an image goes with
    // the last request that needs it.
    let images_before = store.size().unwrap().images;
    store.record_requests(&[(request("r1", "img-1"), "png", b"one")], 2).unwrap();
    let rated = NewFeedback { request_id: Some("r1".into()), image_sha256: "img-1".into(), rating: Some(5), ..Default::default() };
    assert!(store.add_feedback(&rated).unwrap() > 0);
    store.record_requests(&[(request("r2", "img-2"), "png", b"two"), (request("r3", "img-3"), "png", b"three")], 2).unwrap();
    store.record_requests(&[(request("r4", "img-4"), "png", b"four")], 2).unwrap();
    assert!(store.request("r2").unwrap().is_none());
    assert_eq!(store.request("r1").unwrap().unwrap(), request("r1", "img-1"));
    assert!(!store.captioned_by("img-2", Some("k1")).unwrap());
    assert!(store.captioned_by("img-1", Some("k1")).unwrap() && !store.captioned_by("img-1", Some("k2")).unwrap());
    assert!(!store.captioned_by("img-1", None).unwrap());
    assert_eq!(store.size().unwrap().images, images_before + 3, "img-2 went with r2; img-1, img-3, img-4 stay");

    // Feedback exports with its image.
    let feedback = store.feedback_with_images().unwrap();
    assert_eq!((feedback.len(), feedback[0].image.as_slice(), feedback[0].rating), (1, b"one".as_slice(), Some(5)));

    // Pruning by age: nothing is old yet; then everything is, but rated requests and queued jobs stay.
    assert_eq!(store.prune("2000-01-01T00:00:00Z", "2000-01-01T00:00:00Z").unwrap(), Pruned::default());
    let pruned = store.prune("9999-01-01T00:00:00Z", "9999-01-01T00:00:00Z").unwrap();
    assert_eq!((pruned.requests, pruned.jobs), (2, 1));
    assert_eq!(state(store, "j1"), None);
    assert_eq!(state(store, "j4"), Some(JobState::Queued));
    let size = store.size().unwrap();
    assert_eq!((size.requests, size.jobs, size.images), (1, 1, 2), "r1 and its image, j4 and its image");
    assert!(size.bytes > 0);
}

#[test]
fn the_sqlite_store_keeps_the_contract() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&StoreLocation::File(dir.path().join("serve.sqlite3"))).unwrap();
    assert!(!store.is_shared());
    keeps_the_contract(&store);
}

#[test]
#[cfg_attr(not(local_servers), ignore = "needs redis-server, PostgreSQL and nginx (installed by .ci/run)")]
fn the_postgres_store_keeps_the_contract_and_its_migrations_are_versioned() {
    let dir = tempfile::tempdir().unwrap();
    let server = PostgresServer::start(&dir.path().join("postgres"));
    let location = StoreLocation::parse(std::path::Path::new(&server.url()));
    assert!(matches!(location, StoreLocation::Postgres(_)));

    // An empty database is not a server's: export refuses it rather than reading nothing.
    let err = Store::open_existing(&location).unwrap_err().to_string();
    assert!(err.contains("holds no caption tables"), "{err}");

    let store = Store::open(&location).unwrap();
    assert!(store.is_shared());
    keeps_the_contract(&store);
    store.check_writable().unwrap();
    store.check_ready().unwrap();
    // Opening again (another replica) applies nothing twice; the data is there.
    let again = Store::open_existing(&location).unwrap();
    assert_eq!(again.job("j4").unwrap().unwrap().state, JobState::Queued);

    // A database migrated by a newer server is refused, not misread.
    let mut client = postgres::Client::connect(&server.url(), postgres::NoTls).unwrap();
    client.execute("INSERT INTO caption_migrations (version, name, applied_at) VALUES (99, 'future', 'now')", &[]).unwrap();
    let err = Store::open(&location).unwrap_err().to_string();
    assert!(err.contains("newer caption server") && err.contains("99"), "{err}");
}
