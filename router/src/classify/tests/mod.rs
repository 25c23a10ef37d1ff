//! Table-driven tests of the classifier, the normaliser and the `SET` parser.

mod cache;
mod kinds;
mod never_panics;
mod set_parse;
mod state;

use super::{Classification, Classifier};

/// Classifies without sharing a cache between cases.
fn classify(sql: &str) -> Classification {
    (*Classifier::new(0).classify(sql)).clone()
}
