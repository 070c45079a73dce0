//! Full-text search over the in-memory index: the same words as the SQL backends (the string values of the
//! JSON documents, never their keys, split into lower-case runs of letters and digits as
//! [`crate::validate::search_terms`] splits a query), every query word required, ranked by BM25.
//!
//! A search holds the index's read lock only to collect the records ([`super::index::Index::execution_docs`]:
//! reference counts, no copies); matching, scoring and sorting run on that snapshot after the lock is
//! released ([`rank_executions`], [`rank_patterns`]), so a large search never holds up the writer.

use std::sync::Arc;

use parallax_storage_abi::{Execution, Pattern};
use serde_json::Value;

use crate::validate::Page;

/// The words of one searchable record and how often each occurs (shared: a clone is a reference count).
#[derive(Clone, Debug, Default)]
pub struct Terms {
    words: Arc<[(Box<str>, u32)]>,
    len: u32,
}

impl Terms {
    fn from_texts<'a>(texts: impl IntoIterator<Item = &'a str>) -> Terms {
        let mut all: Vec<String> = Vec::new();
        for t in texts {
            all.extend(
                t.split(|c: char| !c.is_alphanumeric()).filter(|w| !w.is_empty()).map(str::to_lowercase),
            );
        }
        let len = all.len() as u32;
        all.sort_unstable();
        let mut words: Vec<(Box<str>, u32)> = Vec::new();
        for w in all {
            match words.last_mut() {
                Some((last, n)) if **last == *w => *n += 1,
                _ => words.push((w.into_boxed_str(), 1)),
            }
        }
        Terms { words: words.into(), len }
    }

    pub fn tf(&self, word: &str) -> u32 {
        self.words.binary_search_by(|(w, _)| (**w).cmp(word)).map_or(0, |i| self.words[i].1)
    }
}

fn strings<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(a) => a.iter().for_each(|v| strings(v, out)),
        Value::Object(o) => o.values().for_each(|v| strings(v, out)),
        _ => {}
    }
}

fn document_terms(docs: &[Option<&str>], plain: &[&str]) -> Terms {
    let values: Vec<Value> =
        docs.iter().flatten().filter_map(|d| serde_json::from_str::<Value>(d).ok()).collect();
    let mut texts: Vec<&str> = plain.to_vec();
    for v in &values {
        strings(v, &mut texts);
    }
    Terms::from_texts(texts)
}

pub fn execution_terms(e: &Execution) -> Terms {
    fn doc(d: &abi_stable::std_types::ROption<abi_stable::std_types::RString>) -> Option<&str> {
        d.as_ref().map(|s| s.as_str()).into_option()
    }
    document_terms(&[doc(&e.input), doc(&e.output), doc(&e.error)], &[])
}

pub fn pattern_terms(p: &Pattern) -> Terms {
    let description = p.description.as_ref().map(|s| s.as_str()).into_option().unwrap_or("");
    document_terms(&[Some(p.definition.as_str())], &[p.name.as_str(), description])
}

/// The records containing every word of `query`, with their BM25 relevance (higher is better), in input
/// order. Document frequencies and the average length are taken over all of `docs`.
pub fn matches<'a, T>(docs: impl Iterator<Item = (&'a Terms, T)>, query: &[String]) -> Vec<(T, f64)> {
    const K1: f64 = 1.2;
    const B: f64 = 0.75;
    let mut df = vec![0u64; query.len()];
    let (mut n, mut total_len) = (0u64, 0u64);
    let mut hits: Vec<(T, Vec<u32>, u32)> = Vec::new();
    for (terms, item) in docs {
        n += 1;
        total_len += u64::from(terms.len);
        let tfs: Vec<u32> = query.iter().map(|w| terms.tf(w)).collect();
        for (d, &tf) in df.iter_mut().zip(&tfs) {
            *d += u64::from(tf > 0);
        }
        if tfs.iter().all(|&tf| tf > 0) {
            hits.push((item, tfs, terms.len));
        }
    }
    let avg = if n == 0 { 1.0 } else { (total_len as f64 / n as f64).max(1.0) };
    hits.into_iter()
        .map(|(item, tfs, len)| {
            let score = tfs
                .iter()
                .zip(&df)
                .map(|(&tf, &df)| {
                    let idf = ((n as f64 - df as f64 + 0.5) / (df as f64 + 0.5) + 1.0).ln();
                    let tf = f64::from(tf);
                    idf * tf * (K1 + 1.0) / (tf + K1 * (1.0 - B + B * f64::from(len) / avg))
                })
                .sum();
            (item, score)
        })
        .collect()
}

/// A page of executions matching every word of `query`, best first; ties newest first (`started_at` desc, id
/// desc), as the SQL backends order them. `docs` is every execution (for the BM25 statistics).
pub fn rank_executions(
    docs: Vec<(Terms, Arc<Execution>)>,
    query: &[String],
    page: &Page<usize>,
) -> Vec<(Execution, f64)> {
    let mut hits = matches(docs.iter().map(|(t, e)| (t, &**e)), query);
    hits.sort_by(|(a, ra), (b, rb)| {
        rb.total_cmp(ra).then(b.started_at.cmp(&a.started_at)).then(b.id.cmp(&a.id))
    });
    let skip = page.after.unwrap_or(0);
    hits.into_iter().skip(skip).take(page.limit + 1).map(|(e, r)| (e.clone(), r)).collect()
}

/// A page of patterns matching every word of `query`, best first; ties newest first (`created_at` desc, id
/// desc). `docs` is every pattern.
pub fn rank_patterns(
    docs: Vec<(Terms, Arc<Pattern>)>,
    query: &[String],
    page: &Page<usize>,
) -> Vec<(Pattern, f64)> {
    let mut hits = matches(docs.iter().map(|(t, p)| (t, &**p)), query);
    hits.sort_by(|(a, ra), (b, rb)| {
        rb.total_cmp(ra).then(b.created_at.cmp(&a.created_at)).then(b.id.cmp(&a.id))
    });
    let skip = page.after.unwrap_or(0);
    hits.into_iter().skip(skip).take(page.limit + 1).map(|(p, r)| (p.clone(), r)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_lower_case_values_not_keys() {
        let t =
            document_terms(&[Some(r#"{"Reactor": "Coolant PUMP, pump!", "n": [1, "écrit-42"]}"#)], &["a-b"]);
        assert_eq!((t.tf("pump"), t.tf("coolant"), t.tf("reactor")), (2, 1, 0));
        assert_eq!((t.tf("écrit"), t.tf("42"), t.tf("a"), t.tf("b"), t.tf("1")), (1, 1, 1, 1, 0));
    }

    #[test]
    fn every_word_must_match_and_frequent_ranks_higher() {
        let a = Terms::from_texts(["needle needle hay"]);
        let b = Terms::from_texts(["needle hay hay hay"]);
        let c = Terms::from_texts(["hay"]);
        let hits = matches([(&a, 'a'), (&b, 'b'), (&c, 'c')].into_iter(), &["needle".into()]);
        assert_eq!(hits.iter().map(|h| h.0).collect::<Vec<_>>(), ['a', 'b']);
        assert!(hits[0].1 > hits[1].1);
        assert!(matches([(&a, 'a')].into_iter(), &["needle".into(), "pin".into()]).is_empty());
    }
}
