//! `parallax audit append | list`.

use serde_json::json;

use super::{args::AuditCmd, patterns::page_request, render, table::key_values, CliError, Output};
use crate::{AuditQuery, NewAuditEntry, Storage};

pub async fn run(store: &Storage, cmd: AuditCmd) -> Result<Output, CliError> {
    match cmd {
        AuditCmd::Append { action, actor, resource_type, resource_id, details, ip, user_agent } => {
            let entry = NewAuditEntry {
                actor,
                resource_type,
                resource_id,
                details,
                ip_address: ip,
                user_agent,
                ..NewAuditEntry::new(action)
            };
            let ids = store.append_audit(vec![entry]).await?;
            let id = ids.into_iter().next().map(|id| id.to_string()).unwrap_or_default();
            Ok(Output::new(json!({ "id": id }), key_values(&[("id", id.clone())])))
        }
        AuditCmd::List { actor, action, resource_type, resource_id, since, until, page } => {
            if let (Some(s), Some(u)) = (since, until) {
                if s > u {
                    return Err(CliError::usage("--since is later than --until; nothing can match"));
                }
            }
            let q = AuditQuery { actor, action, resource_type, resource_id, from: since, until };
            let got = store.query_audit(q, page_request(&page)).await?;
            let next = got.next_cursor;
            let items = got.items;
            let doc = render::page(render::all(&items, render::audit), next.as_deref());
            let mut text = render::audit_table(&items);
            if let Some(c) = &next {
                text.push_str(&render::next_page_hint(c));
            }
            Ok(Output::new(doc, text))
        }
    }
}
