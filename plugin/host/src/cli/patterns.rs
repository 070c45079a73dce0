//! `parallax patterns put | get | list | versions | delete`.

use serde_json::json;

use super::{
    args::{PageArgs, PatternsCmd},
    input::{read_pattern_file, Overrides},
    render::{self, Record},
    table::yaml_block,
    CliError, Output,
};
use crate::{ErrorKind, NewPattern, Page, Pattern, Storage};

pub async fn run(store: &Storage, cmd: PatternsCmd) -> Result<Output, CliError> {
    match cmd {
        PatternsCmd::Put { file, name, version, description, created_by } => {
            let doc = read_pattern_file(&file, Overrides { name, version, description })?;
            let new = NewPattern {
                description: doc.description.clone(),
                created_by,
                ..NewPattern::new(doc.name.clone(), doc.version.clone(), &doc.definition)
            };
            match store.put_pattern(new).await {
                Ok(stored) => Ok(record(&stored, "stored")),
                // Versions are immutable, but putting the very same content again (a re-run deploy script)
                // is not an error: only a *different* definition under an existing version is.
                Err(e) if e.kind == ErrorKind::Conflict => {
                    let existing = store.get_pattern(&doc.name, &doc.version).await?;
                    let same_definition = existing.definition == doc.definition;
                    let same_description = existing.description == doc.description;
                    if same_definition && same_description {
                        Ok(record(&existing, "unchanged (identical content already stored):"))
                    } else {
                        Err(CliError::new(
                            super::EXIT_CONFLICT,
                            format!(
                                "pattern {:?} version {} already exists with different content; versions are \
                                 immutable: bump the version",
                                doc.name, doc.version
                            ),
                        ))
                    }
                }
                Err(e) => Err(e.into()),
            }
        }
        PatternsCmd::Get { name, version } => {
            let p = match version {
                Some(v) => store.get_pattern(&name, &v).await?,
                None => store.get_latest_pattern(&name).await?,
            };
            Ok(record(&p, ""))
        }
        PatternsCmd::List { page, all } => list(store, page, all).await,
        PatternsCmd::Versions { name } => {
            let versions = store.list_pattern_versions(&name).await?;
            if versions.is_empty() {
                return Err(CliError::new(super::EXIT_NOT_FOUND, format!("pattern {name:?} not found")));
            }
            let doc = json!({ "name": name, "items": render::all(&versions, render::pattern) });
            Ok(Output::new(doc, render::patterns_table(&versions, false)))
        }
        PatternsCmd::Search { text, page } => {
            let got = store.search_patterns(&text.join(" "), page_request(&page)).await?;
            let items: Vec<Pattern> = got.items.iter().map(|h| h.pattern.clone()).collect();
            let records = got.items.iter().map(|h| (render::pattern(&h.pattern), h.rank)).collect();
            let next = got.next_cursor.as_deref();
            let (doc, text) = render::ranked_page(records, render::patterns_table(&items, true), next);
            Ok(Output::new(doc, text))
        }
        PatternsCmd::Delete { name, version } => {
            store.delete_pattern(&name, &version).await?;
            let doc = json!({ "deleted": { "name": name, "version": version } });
            Ok(Output::new(doc, format!("deleted pattern {name} {version}\n")))
        }
    }
}

/// A pattern as `key: value` lines with the definition as indented YAML; `verb` heads the text when set.
fn record(p: &Pattern, verb: &str) -> Output {
    let r: Record = render::pattern(p);
    let mut text =
        if verb.is_empty() { String::new() } else { format!("{verb} pattern {} {}\n", p.name, p.version) };
    text.push_str(&r.table_except(&["definition"]));
    if verb.is_empty() {
        text.push_str("definition:\n");
        text.push_str(&yaml_block(r.get("definition"), 2));
    }
    Output::new(r.json(), text)
}

pub fn page_request(page: &PageArgs) -> Page {
    Page { limit: page.limit.unwrap_or(0), cursor: page.cursor.clone() }
}

async fn list(store: &Storage, page: PageArgs, all: bool) -> Result<Output, CliError> {
    let mut request = page_request(&page);
    let mut items = Vec::new();
    let next = loop {
        let got = store.list_patterns(request.clone()).await?;
        items.extend(got.items);
        match got.next_cursor {
            Some(c) if all => request.cursor = Some(c),
            other => break other,
        }
    };
    let doc = render::page(render::all(&items, render::pattern), next.as_deref());
    let mut text = render::patterns_table(&items, true);
    if let Some(c) = &next {
        text.push_str(&render::next_page_hint(c));
    }
    Ok(Output::new(doc, text))
}
