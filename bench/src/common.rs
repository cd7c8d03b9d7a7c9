//! What several benchmarks share: an account on the host under test, the
//! deterministic vectors they load, and how a comparison row prints.

/// Signs up `email` on the host at `base`; its access token.
pub fn signup(base: &str, email: &str) -> anyhow::Result<String> {
    let mut signup = ureq::post(&format!("{base}/v1/auth/signup"))
        .send_json(serde_json::json!({ "email": email, "password": "bench password 123" }))?;
    let signup: serde_json::Value = signup.body_mut().read_json()?;
    Ok(signup["access_token"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

/// A deterministic vector of `dimensions` three-decimal components in
/// [-1, 1] (xorshift from `seed`).
pub fn vector(seed: u64, dimensions: usize) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..dimensions)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state % 2001) as f64 - 1000.0) / 1000.0
        })
        .collect()
}

/// pgvector's text form of `v`.
pub fn vector_text(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(f64::to_string).collect();
    format!("[{}]", items.join(","))
}

/// The header of a table of [`crate::native::Comparison`] rows.
pub fn header(api: &str, direct: &str) -> String {
    format!(
        "{:<16} {api:>12} {:>9} {:>9} {direct:>12} {:>9} {:>9} {:>7}  per round",
        "", "p50 µs", "p99 µs", "p50 µs", "p99 µs", "ratio"
    )
}

/// One comparison as a row under [`header`].
pub fn row(name: &str, c: &crate::native::Comparison) -> String {
    format!(
        "{name:<16} {:>12.0} {:>9.0} {:>9.0} {:>12.0} {:>9.0} {:>9.0} {:>7.2}  {}",
        c.api[0],
        c.api[1],
        c.api[2],
        c.direct[0],
        c.direct[1],
        c.direct[2],
        c.ratio(),
        c.per_round()
    )
}
