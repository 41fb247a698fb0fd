//! Python float operations whose last-bit rounding the scores depend on.

/// Python's `x ** y` for floats, which is C `pow`. Both operands go through `black_box` so
/// that the compiler cannot rewrite `pow(x, 0.5)` as `sqrt(x)` or fold a constant base into
/// another function: those rewrites may round differently from libm's `pow` in the last bit.
pub fn pow(x: f64, y: f64) -> f64 {
    std::hint::black_box(x).powf(std::hint::black_box(y))
}
