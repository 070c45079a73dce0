//! `parallax audit append | list` and `parallax storage audit verify`.

use serde_json::json;

use parallax_storage_abi::audit::{AuditVerifyParams, AuditVerifyReport, ChainHead};

use super::{
    args::{AuditCmd, StorageAuditCmd},
    patterns::page_request,
    render,
    table::key_values,
    CliError, Output, EXIT_OTHER,
};
use crate::{AuditQuery, NewAuditEntry, Storage, Timestamp};

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

/// `parallax storage audit verify`.
pub async fn verify(store: &Storage, cmd: StorageAuditCmd) -> Result<Output, CliError> {
    let StorageAuditCmd::Verify { since, print_head, expect_head } = cmd;
    let params = AuditVerifyParams {
        since: since.map(|t| t.as_micros()),
        expect_head: expect_head.map(|(seq, hash)| ChainHead { seq, hash }),
    };
    let r = store.audit_verify(&params).await?;
    let doc = serde_json::to_value(&r).unwrap_or_default();
    let head = format!("{}:{}", r.head.seq, r.head.hash);
    let mut text = if print_head { format!("{head}\n") } else { verify_text(&r, &head) };
    let mut out = Output::new(doc, String::new());
    if !r.ok {
        let first = r.breaks.first().map_or_else(String::new, |b| format!(": first, {}", b.message));
        out.failure = Some(CliError::new(
            EXIT_OTHER,
            format!(
                "the audit chain is broken ({} break{}){first}; see the list above",
                r.break_count,
                if r.break_count == 1 { "" } else { "s" }
            ),
        ));
        if print_head {
            text.push_str(&verify_text(&r, &head));
        }
    }
    out.table = text;
    Ok(out)
}

fn verify_text(r: &AuditVerifyReport, head: &str) -> String {
    let span = if r.checked == 0 { "none".to_string() } else { format!("{} to {}", r.first_seq, r.last_seq) };
    let mut pairs = vec![
        ("checked", format!("{} entries (sequence numbers {span})", r.checked)),
        ("head", head.to_string()),
    ];
    if let Some(cp) = &r.checkpoint {
        pairs.push((
            "checkpoint",
            format!(
                "{}:{} ({} oldest entries removed by retention or archive, last at {})",
                cp.seq,
                cp.hash,
                cp.removed,
                Timestamp::from_micros(cp.at)
            ),
        ));
    }
    if r.awaiting_removal > 0 {
        pairs.push((
            "awaiting removal",
            format!(
                "{} entries at or below the checkpoint (a cleanup or archive run was interrupted; run it again)",
                r.awaiting_removal
            ),
        ));
    }
    if let Some(ok) = r.expected_head_ok {
        pairs.push(("expected head", if ok { "present, same hash".into() } else { "NOT FOUND".into() }));
    }
    pairs.push(("duration", format!("{} ms", r.duration_ms)));
    let mut text = key_values(&pairs);
    if r.ok {
        text.push_str("verified: the chain is intact\n");
    } else {
        text.push_str(&format!("BROKEN: {} break(s)\n", r.break_count));
        for b in &r.breaks {
            let at = b.seq.map_or_else(|| "-".to_string(), |s| s.to_string());
            text.push_str(&format!("  {:<9} seq {at:<10} {}\n", b.kind, b.message));
        }
        if r.break_count > r.breaks.len() as u64 {
            text.push_str(&format!(
                "  … and {} more (--output json lists the same first ones)\n",
                r.break_count - r.breaks.len() as u64
            ));
        }
    }
    text
}
