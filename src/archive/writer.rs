//! Writing archive objects, streamed: records are gzip-compressed as they come ([`format::GZIP_LEVEL`]) into a
//! buffer that hashes (SHA-256) and counts the compressed bytes; once the buffer reaches the destination's
//! part size it goes out as one part of a multipart upload (at most two parts in flight), so memory is a few
//! parts whatever the number of rows. An object smaller than one part is a single PUT. A new object starts at
//! each month change and once an object reaches `maxObjectSize`. Every object is read back (streamed) and its
//! size and SHA-256 compared before the next one starts.

use std::io::Write;

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use object_store::{path::Path, ObjectStoreExt, PutPayload, WriteMultipart};
use parallax_storage_abi::archive::ObjectEntry;

use super::{
    destination::Destination,
    format::{self, hex, Record, Table},
    pause_point, read,
};
use crate::{
    error::{Error, Result},
    time,
};

/// Compressed bytes: kept until a part is full, hashed and counted as they are produced.
struct Sink {
    buf: Vec<u8>,
    sha: ring::digest::Context,
    bytes: u64,
}

impl Write for Sink {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        self.sha.update(data);
        self.bytes += data.len() as u64;
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

struct Open {
    key: String,
    path: Path,
    month: (i16, i8),
    gz: GzEncoder<Sink>,
    upload: Option<WriteMultipart>,
    rows: u64,
    events: u64,
    oldest: i64,
    newest: i64,
    min_id: String,
    max_id: String,
}

/// The objects of one run.
pub struct ObjectWriter<'a> {
    dest: &'a Destination,
    table: Table,
    run_id: String,
    next: u32,
    open: Option<Open>,
    /// Objects stored and verified, in order.
    pub done: Vec<ObjectEntry>,
    part_size: usize,
    max_object_bytes: u64,
    paused_mid_upload: bool,
}

/// Parts of a multipart upload in flight at once.
const MAX_PARTS_IN_FLIGHT: usize = 2;

impl<'a> ObjectWriter<'a> {
    pub fn new(dest: &'a Destination, table: Table, run_id: &str) -> ObjectWriter<'a> {
        ObjectWriter {
            dest,
            table,
            run_id: run_id.to_string(),
            next: 1,
            open: None,
            done: Vec::new(),
            part_size: dest.part_size.max(1),
            max_object_bytes: dest.max_object_bytes.max(1),
            paused_mid_upload: false,
        }
    }

    /// Appends one record (records come in `(time, id)` order).
    pub async fn push(&mut self, rec: &Record) -> Result<()> {
        let line = rec.encode()?;
        let at = rec.at();
        let month = format::month(at);
        let roll = self
            .open
            .as_ref()
            .is_some_and(|o| o.month != month || o.gz.get_ref().bytes >= self.max_object_bytes);
        if roll {
            self.close().await?;
        }
        if self.open.is_none() {
            let key = format::object_key(self.table, at, &self.run_id, self.next);
            self.next += 1;
            self.open = Some(Open {
                path: self.dest.path(&key),
                key,
                month,
                gz: GzEncoder::new(
                    Sink {
                        buf: Vec::with_capacity(self.part_size.min(1 << 20)),
                        sha: ring::digest::Context::new(&ring::digest::SHA256),
                        bytes: 0,
                    },
                    Compression::new(format::GZIP_LEVEL),
                ),
                upload: None,
                rows: 0,
                events: 0,
                oldest: at,
                newest: at,
                min_id: rec.id().to_string(),
                max_id: rec.id().to_string(),
            });
        }
        let o = self.open.as_mut().expect("an object is open");
        o.gz.write_all(line.as_bytes())
            .and_then(|_| o.gz.write_all(b"\n"))
            .map_err(|e| Error::internal(format!("compressing object {}: {e}", o.key)))?;
        o.rows += 1;
        o.events += rec.events();
        o.oldest = o.oldest.min(at);
        o.newest = o.newest.max(at);
        if rec.id() < o.min_id.as_str() {
            o.min_id = rec.id().to_string();
        }
        if rec.id() > o.max_id.as_str() {
            o.max_id = rec.id().to_string();
        }
        if o.gz.get_ref().buf.len() >= self.part_size {
            self.send_part().await?;
        }
        Ok(())
    }

    /// Sends the full buffer as part(s) of the open object's multipart upload (started here if needed).
    async fn send_part(&mut self) -> Result<()> {
        let dest = self.dest;
        let o = self.open.as_mut().expect("an object is open");
        let first = o.upload.is_none();
        if first {
            let up = dest
                .store()
                .put_multipart(&o.path)
                .await
                .map_err(|e| dest.error(&format!("cannot start uploading object {}", o.key), e))?;
            o.upload = Some(WriteMultipart::new_with_chunk_size(up, self.part_size));
        }
        let up = o.upload.as_mut().expect("an upload is started");
        up.wait_for_capacity(MAX_PARTS_IN_FLIGHT)
            .await
            .map_err(|e| dest.error(&format!("cannot upload object {}", o.key), e))?;
        up.put(Bytes::from(std::mem::take(&mut o.gz.get_mut().buf)));
        if first && !self.paused_mid_upload {
            // One part stored, the upload not completed: the step a kill test stops at.
            up.wait_for_capacity(1)
                .await
                .map_err(|e| dest.error(&format!("cannot upload object {}", o.key), e))?;
            self.paused_mid_upload = true;
            pause_point("mid-upload").await;
        }
        Ok(())
    }

    /// Completes the open object, reads it back and checks its size and SHA-256.
    pub async fn close(&mut self) -> Result<()> {
        let Some(o) = self.open.take() else { return Ok(()) };
        let dest = self.dest;
        let sink =
            o.gz.finish().map_err(|e| Error::internal(format!("compressing object {}: {e}", o.key)))?;
        let sha256 = hex(sink.sha.finish().as_ref());
        let rest = Bytes::from(sink.buf);
        match o.upload {
            None => {
                dest.store()
                    .put(&o.path, PutPayload::from_bytes(rest))
                    .await
                    .map_err(|e| dest.error(&format!("cannot upload object {}", o.key), e))?;
            }
            Some(mut up) => {
                if !rest.is_empty() {
                    up.put(rest);
                }
                up.finish().await.map_err(|e| dest.error(&format!("cannot upload object {}", o.key), e))?;
            }
        }
        dest.owner_only(&o.key);
        let got = read::checksum(dest, &o.key).await?;
        if got.size != sink.bytes || got.sha256 != sha256 {
            return Err(Error::unavailable(format!(
                "object {} at {} read back as {} bytes with SHA-256 {}, but {} bytes with SHA-256 {} were \
                 written; nothing was deleted",
                o.key,
                dest.text(),
                got.size,
                got.sha256,
                sink.bytes,
                sha256
            )));
        }
        self.done.push(ObjectEntry {
            key: o.key,
            size: sink.bytes,
            sha256,
            rows: o.rows,
            events: o.events,
            oldest: Some(time::rfc3339(o.oldest)),
            newest: Some(time::rfc3339(o.newest)),
            min_id: Some(o.min_id),
            max_id: Some(o.max_id),
        });
        Ok(())
    }

    /// Gives up on the open object (its multipart upload is aborted; a single PUT never started).
    pub async fn abort(&mut self) {
        if let Some(o) = self.open.take() {
            if let Some(up) = o.upload {
                let _ = up.abort().await;
            }
        }
    }
}
