//! The HTTP endpoints: [`prom`] (the Prometheus query API), [`json`] (the JSON API), [`admin`]
//! (SQL and recompute jobs), [`rules`] (rules and alerts, forwarded to the rule evaluator), with
//! [`params`] and [`response`] shared by all of them.

pub mod admin;
pub mod json;
pub mod params;
pub mod prom;
pub mod response;
pub mod rules;

/// `warnings` of an answer, with the batch views' refresh problem (if any) added, sorted.
pub fn with_refresh_warning(
    state: &crate::app::AppState,
    mut warnings: Vec<String>,
) -> Vec<String> {
    warnings.extend(state.engine.refresh_warning());
    warnings.sort();
    warnings.dedup();
    warnings
}
