//! What every bench shares: where criterion writes, and reading its estimates back to print
//! ratios against a baseline measured in the same run.

use std::path::PathBuf;

/// Criterion's output directory (the workspace's `target/criterion`).
pub fn criterion_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("criterion")
}

/// Criterion's estimate of the time per iteration of `bench` in seconds: the regression slope
/// where it sampled linearly, else the mean.
pub fn estimate(bench: &str) -> Option<f64> {
    let path = criterion_dir().join(bench).join("new/estimates.json");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    let pick = |key: &str| json.get(key)?.get("point_estimate")?.as_f64();
    Some(pick("slope").or_else(|| pick("mean"))? / 1e9)
}
