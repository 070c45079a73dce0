//! `parallax audit append | list`.

use abi_stable::std_types::{ROption, RString};
use parallax_storage_abi::{AuditQuery, NewAuditEntry};
use serde_json::json;

use super::{args::AuditCmd, patterns::page_request, render, table::key_values, CliError, Output};
use crate::Storage;

fn opt(s: Option<String>) -> ROption<RString> {
    s.map(RString::from).into()
}

pub async fn run(store: &Storage, cmd: AuditCmd) -> Result<Output, CliError> {
    match cmd {
        AuditCmd::Append { action, actor, resource_type, resource_id, details, ip, user_agent } => {
            let entry = NewAuditEntry {
                id: ROption::RNone,
                timestamp: ROption::RNone,
                action: action.into(),
                actor: opt(actor),
                resource_type: opt(resource_type),
                resource_id: opt(resource_id),
                details: opt(details),
                ip_address: opt(ip),
                user_agent: opt(user_agent),
            };
            let ids = store.append_audit(vec![entry]).await?;
            let id = ids.into_iter().next().unwrap_or_default();
            Ok(Output::new(json!({ "id": id }), key_values(&[("id", id.clone())])))
        }
        AuditCmd::List { actor, action, resource_type, resource_id, since, until, page } => {
            if let (Some(s), Some(u)) = (since, until) {
                if s > u {
                    return Err(CliError::usage("--since is later than --until; nothing can match"));
                }
            }
            let q = AuditQuery {
                actor: opt(actor),
                action: opt(action),
                resource_type: opt(resource_type),
                resource_id: opt(resource_id),
                from: since.into(),
                until: until.into(),
            };
            let got = store.query_audit(q, page_request(&page)).await?;
            let next = got.next_cursor.as_ref().map(|c| c.to_string()).into_option();
            let items = got.items.into_vec();
            let doc = render::page(render::all(&items, render::audit), next.as_deref());
            let mut text = render::audit_table(&items);
            if let Some(c) = &next {
                text.push_str(&render::next_page_hint(c));
            }
            Ok(Output::new(doc, text))
        }
    }
}
