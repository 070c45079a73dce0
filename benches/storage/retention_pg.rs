//! Retention benchmark on pg (issue 12): our cleanup against a raw baseline in the same run.

use crate::util::Opts;

pub async fn run(_opts: &Opts) {
    eprintln!("# retention_pg: not written yet");
}
