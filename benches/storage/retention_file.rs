//! Retention benchmark on file (issue 12): our cleanup against a raw baseline in the same run.

use crate::util::Opts;

pub async fn run(_opts: &Opts) {
    eprintln!("# retention_file: not written yet");
}
