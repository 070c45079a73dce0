//! [`super::tamper::tamper`] on this backend: the audit batch files under `audit/` edited the way an operator
//! with an editor would (read the YAML or JSON document, change it, write it back; `.gz` files gunzipped and
//! gzipped again, as `gzip -dc` / `gzip` would), with the store shut down.

use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
};

use serde_json::{json, Value};

use super::{
    file::{base, files},
    tamper::Tamper,
    Harness,
};

/// One audit batch file, parsed.
struct Batch {
    path: PathBuf,
    doc: Value,
}

fn is_gz(path: &Path) -> bool {
    path.to_string_lossy().ends_with(".gz")
}

fn is_yaml(path: &Path) -> bool {
    let name = path.to_string_lossy();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    name.ends_with(".yaml") || name.ends_with(".yml")
}

fn read(path: &Path) -> Batch {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = if is_gz(path) {
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .unwrap_or_else(|e| panic!("gunzip {}: {e}", path.display()));
        out
    } else {
        bytes
    };
    let doc: Value = if is_yaml(path) {
        serde_yaml_ng::from_slice(&text).unwrap_or_else(|e| panic!("YAML {}: {e}", path.display()))
    } else {
        serde_json::from_slice(&text).unwrap_or_else(|e| panic!("JSON {}: {e}", path.display()))
    };
    Batch { path: path.to_path_buf(), doc }
}

fn write(b: &Batch) {
    let mut text = if is_yaml(&b.path) {
        serde_yaml_ng::to_string(&b.doc).unwrap().into_bytes()
    } else {
        serde_json::to_vec_pretty(&b.doc).unwrap()
    };
    if !text.ends_with(b"\n") {
        text.push(b'\n');
    }
    let bytes = if is_gz(&b.path) {
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&text).unwrap();
        gz.finish().unwrap()
    } else {
        text
    };
    std::fs::write(&b.path, bytes).unwrap_or_else(|e| panic!("write {}: {e}", b.path.display()));
}

/// Every audit batch file of the store.
fn batches(h: &Harness) -> Vec<Batch> {
    files(&base(h).join("audit"))
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .map(|p| read(p))
        .collect()
}

fn entries(b: &mut Batch) -> &mut Vec<Value> {
    b.doc["entries"].as_array_mut().unwrap_or_else(|| panic!("{} has no entries list", b.path.display()))
}

/// The batch file holding entry `id`, and the entry's position in it.
fn find(h: &Harness, id: &str) -> (Batch, usize) {
    for mut b in batches(h) {
        if let Some(i) = entries(&mut b).iter().position(|e| e["id"] == json!(id)) {
            return (b, i);
        }
    }
    panic!("no audit batch file of the store holds entry {id}")
}

pub fn apply(h: &Harness, t: Tamper<'_>) {
    match t {
        Tamper::Alter(id) => {
            let (mut b, i) = find(h, id);
            entries(&mut b)[i]["actor"] = json!("mallory");
            write(&b);
        }
        Tamper::Delete(id) => {
            let (mut b, i) = find(h, id);
            entries(&mut b).remove(i);
            if entries(&mut b).is_empty() {
                std::fs::remove_file(&b.path).unwrap();
            } else {
                write(&b);
            }
        }
        Tamper::Forge(id) => {
            // Into the newest batch file (its name sorts by day and time), as a hand edit would: the fields of
            // an entry, none of the chain's.
            let mut b = batches(h).pop().expect("the store holds an audit batch file to add to");
            let now = jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%S.%6fZ").to_string();
            entries(&mut b)
                .push(json!({ "id": id, "timestamp": now, "action": "forged", "actor": "mallory" }));
            write(&b);
        }
        Tamper::Swap(a, z) => {
            let (mut ba, ia) = find(h, a);
            let seq_a = entries(&mut ba)[ia]["chain_seq"].clone();
            let (mut bz, iz) = find(h, z);
            let seq_z = entries(&mut bz)[iz]["chain_seq"].clone();
            if ba.path == bz.path {
                let list = entries(&mut ba);
                list[ia]["chain_seq"] = seq_z;
                list[iz]["chain_seq"] = seq_a;
                write(&ba);
            } else {
                entries(&mut ba)[ia]["chain_seq"] = seq_z;
                entries(&mut bz)[iz]["chain_seq"] = seq_a;
                write(&ba);
                write(&bz);
            }
        }
    }
}
