//! `export` and `import` answer the same on every backend: everything a store holds (every pattern version,
//! every execution in any status with its events, every audit entry) exported to a local destination in the
//! archive's format, imported into a fresh store of the same backend, equals the original field by field; the
//! export is an archive `archive_verify` accepts; a non-empty store refuses an import unless `merge`, and with
//! `merge` a row present with other content is a conflict, never overwritten.

use parallax_storage_host::transfer::TABLES;
use parallax_storage_host::{archive::VerifyParams, *};
use serde_json::json;

use crate::common::{archive as ar, transfer::*, *};

pub async fn transfer_export_then_import_equals_the_original(h: &Harness) {
    let counts = populate_everything(&h.storage).await;
    let before = full_snapshot(&h.storage).await;
    assert_eq!(before.counts(), counts, "the store holds what was written");
    let searches = search_answers(&h.storage).await;
    let (root, dest) = ar::destination(h, "export");

    let x = h.storage.export(&export_to(&dest)).await.expect("export");
    assert!(!x.dry_run && !x.run_id.is_empty() && !x.snapshot.is_empty(), "{x:?}");
    let names: Vec<&str> = x.tables.iter().map(|t| t.table.as_str()).collect();
    assert_eq!(names, TABLES, "{x:?}");
    for t in &x.tables {
        assert_eq!(t.source_rows, counts.of(&t.table), "exported {}: {t:?}", t.table);
        assert_eq!(t.source_checksum.len(), 32, "{t:?}");
    }
    assert_eq!(x.after_snapshot.values().sum::<u64>(), 0, "{x:?}");
    assert_eq!(
        x.manifests.last().map(String::as_str),
        Some("export.json"),
        "export.json is written last: {x:?}"
    );
    assert!(root.join("export.json").is_file(), "export.json at the destination's root");
    assert!(x.objects > 0 && x.bytes > 0, "{x:?}");
    let pattern_manifests = root.join("patterns").join("manifests");
    assert!(
        std::fs::read_dir(&pattern_manifests).is_ok_and(|mut d| d.next().is_some()),
        "the patterns have a manifest under {}",
        pattern_manifests.display()
    );
    // The export is an archive: verify accepts every manifest and object in it.
    let v =
        h.storage.archive_verify(&VerifyParams { source: dest.clone() }).await.expect("verify the export");
    assert!(v.ok, "archive verify on the export: {v:?}");
    assert!(v.orphans.is_empty(), "{v:?}");

    let to = ar::fresh_like(h).await;
    let r = to.storage.import(&import_from(&dest, false)).await.expect("import into a fresh store");
    assert_verified(&r, "import");
    assert_eq!(r.mode, "fresh", "{r:?}");
    for t in TABLES {
        let e = table(&r, t);
        assert_eq!(
            (e.source_rows, e.copied, e.present, e.conflicts),
            (counts.of(t), counts.of(t), 0, 0),
            "{t}: {e:?}"
        );
        let exported = x.tables.iter().find(|x| x.table == t).unwrap();
        assert_eq!(e.source_checksum, exported.source_checksum, "{t}: the export's checksum is the import's");
    }
    assert_same(&before, &full_snapshot(&to.storage).await, "export then import");
    assert_eq!(search_answers(&to.storage).await, searches, "search answers the same after the import");
    assert_pg_clean(&to.config, &before, "after the import").await;
    to.finish().await;
}

pub async fn transfer_import_needs_merge_and_reports_conflicts(h: &Harness) {
    let to = ar::fresh_like(h).await;
    merge_fixture(&h.storage, &to.storage).await;
    let (_, dest) = ar::destination(h, "export");
    h.storage.export(&export_to(&dest)).await.expect("export");
    let before = full_snapshot(&to.storage).await;

    assert_kind(to.storage.import(&import_from(&dest, false)).await, ErrorKind::Conflict, "--merge");
    assert_same(&before, &full_snapshot(&to.storage).await, "after the refused import");

    let r = to.storage.import(&import_from(&dest, true)).await.expect("import with merge");
    assert!(r.merge, "{r:?}");
    assert_eq!(r.mode, "merge", "{r:?}");
    let conflicted = uuid_n(2).to_string();
    assert_eq!(r.conflict_count, 1, "{r:?}");
    assert_eq!(
        r.conflicts.iter().map(|c| (c.table.as_str(), c.id.as_str())).collect::<Vec<_>>(),
        vec![("executions", conflicted.as_str())],
        "{r:?}"
    );
    let e = table(&r, "executions");
    assert_eq!((e.source_rows, e.copied, e.present, e.conflicts), (3, 1, 1, 1), "{e:?}");
    let a = table(&r, "audit_logs");
    assert_eq!((a.copied, a.present), (1, 1), "{a:?}");
    assert!(r.tables.iter().all(|t| t.ok), "conflicts are left out of both checksums: {r:?}");

    let after = full_snapshot(&to.storage).await;
    assert_eq!(
        after.executions[&conflicted], before.executions[&conflicted],
        "the conflict is not overwritten"
    );
    assert_eq!(after.executions[&conflicted]["input"]["text"], json!("zeppelin target"));
    let source = full_snapshot(&h.storage).await;
    let only = uuid_n(3).to_string();
    assert_eq!(after.executions[&only], source.executions[&only], "the missing row is imported");
    assert_eq!((after.executions.len(), after.audit.len(), after.patterns.len()), (4, 2, 1));
    to.finish().await;
}
