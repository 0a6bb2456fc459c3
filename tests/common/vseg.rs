//! Hostile segment packages (`.vseg`, DESIGN §4), built by hand, byte by byte, without the crate's
//! packer: tar headers are written here (names the `tar` crate would refuse are put straight into
//! the header's name field), then compressed with `zstd` as asked.
//!
//! A [`Package`] is a manifest (JSON, edited freely), who signs it and how, and the tar layout:
//! the manifest, the signature and entries in any order, each entry any type, name and declared
//! size. [`Fixture::good`] makes a valid package; [`Fixture::threat`] makes, by name (see
//! [`THREATS`]), one that a device must refuse.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use ed25519_dalek::{Signer as _, SigningKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tar::EntryType;

/// What a package signature covers: this line, then the exact bytes of `manifest.json`.
pub const SIGNED_PREFIX: &[u8] = b"vistter.segment.v1\n";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.sig";
/// The timeline inside every package made here.
pub const TIMELINE_ID: &str = "seg-tl";
/// Every entry's modification time (packages are reproducible).
const MTIME: u64 = 1_795_000_000;
const MIB: u64 = 1 << 20;

/// A signing key and the id it signs as.
#[derive(Clone)]
pub struct Signer {
    pub key_id: String,
    pub key: SigningKey,
}

impl Signer {
    pub fn generate(key_id: &str) -> Signer {
        Signer { key_id: key_id.into(), key: SigningKey::generate(&mut rand::rngs::OsRng) }
    }

    /// Base64 of the public key (what `trust add --public-key` takes).
    pub fn public_b64(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.key.verifying_key().as_bytes())
    }
}

/// An entry's content.
#[derive(Clone, Debug)]
pub enum Body {
    Bytes(Vec<u8>),
    /// That many zero bytes, streamed (never held in memory).
    Zeros(u64),
}

impl Body {
    pub fn len(&self) -> u64 {
        match self {
            Body::Bytes(b) => b.len() as u64,
            Body::Zeros(n) => *n,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn write(&self, w: &mut dyn Write) -> io::Result<()> {
        match self {
            Body::Bytes(b) => w.write_all(b),
            Body::Zeros(n) => {
                let chunk = vec![0u8; MIB as usize];
                let mut left = *n;
                while left > 0 {
                    let k = left.min(MIB);
                    w.write_all(&chunk[..k as usize])?;
                    left -= k;
                }
                Ok(())
            }
        }
    }

    /// Size and lowercase hex SHA-256, as a manifest lists them.
    fn digest(&self) -> (u64, String) {
        let mut h = Sha256::new();
        match self {
            Body::Bytes(b) => h.update(b),
            Body::Zeros(n) => {
                let chunk = vec![0u8; MIB as usize];
                let mut left = *n;
                while left > 0 {
                    let k = left.min(MIB);
                    h.update(&chunk[..k as usize]);
                    left -= k;
                }
            }
        }
        (self.len(), hex::encode(h.finalize()))
    }
}

/// One tar entry, as raw as a header allows.
#[derive(Clone, Debug)]
pub struct Entry {
    /// The header's name field (at most 100 bytes; any bytes).
    pub name: Vec<u8>,
    pub kind: EntryType,
    pub body: Body,
    /// The size the header declares, when it is not the body's.
    pub declared_size: Option<u64>,
    /// The header's link name field (symlinks, hard links).
    pub link: Vec<u8>,
    /// Major and minor device numbers (devices).
    pub device: Option<(u32, u32)>,
    /// A ustar header (instead of GNU) with this prefix field: the path is `prefix/name`.
    pub ustar_prefix: Option<Vec<u8>>,
}

impl Entry {
    pub fn file(name: &str, body: Body) -> Entry {
        Entry::raw(name.as_bytes(), EntryType::Regular, body)
    }

    pub fn raw(name: &[u8], kind: EntryType, body: Body) -> Entry {
        Entry {
            name: name.to_vec(),
            kind,
            body,
            declared_size: None,
            link: Vec::new(),
            device: None,
            ustar_prefix: None,
        }
    }

    pub fn link(name: &str, kind: EntryType, target: &str) -> Entry {
        Entry { link: target.as_bytes().to_vec(), ..Entry::raw(name.as_bytes(), kind, Body::Bytes(Vec::new())) }
    }

    pub fn device(name: &str, kind: EntryType, major: u32, minor: u32) -> Entry {
        Entry { device: Some((major, minor)), ..Entry::raw(name.as_bytes(), kind, Body::Bytes(Vec::new())) }
    }

    /// A GNU long-name ('L') entry: the next entry's name.
    pub fn gnu_long_name(name: Body) -> Entry {
        Entry::raw(b"././@LongLink", EntryType::GNULongName, name)
    }

    /// A pax extended header ('x') with these records (for the next entry).
    pub fn pax(records: &[(&str, &[u8])]) -> Entry {
        let mut body = Vec::new();
        for (k, v) in records {
            body.extend(pax_record(k, v));
        }
        Entry::raw(b"PaxHeaders/entry", EntryType::XHeader, Body::Bytes(body))
    }

    fn header(&self) -> tar::Header {
        let mut h = if self.ustar_prefix.is_some() { tar::Header::new_ustar() } else { tar::Header::new_gnu() };
        if let Some(prefix) = &self.ustar_prefix {
            let ustar = h.as_ustar_mut().expect("a ustar header");
            assert!(prefix.len() <= ustar.prefix.len(), "ustar prefix over 155 bytes");
            ustar.prefix[..prefix.len()].copy_from_slice(prefix);
        }
        assert!(self.name.len() <= 100, "entry name over 100 bytes: {:?}", String::from_utf8_lossy(&self.name));
        assert!(self.link.len() <= 100, "link name over 100 bytes");
        {
            let old = h.as_old_mut();
            old.name[..self.name.len()].copy_from_slice(&self.name);
            old.linkname[..self.link.len()].copy_from_slice(&self.link);
        }
        h.set_entry_type(self.kind);
        h.set_mode(if self.kind == EntryType::Directory { 0o755 } else { 0o644 });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(MTIME);
        h.set_size(self.declared_size.unwrap_or(self.body.len()));
        if let Some((major, minor)) = self.device {
            h.set_device_major(major).expect("a GNU header has device fields");
            h.set_device_minor(minor).expect("a GNU header has device fields");
        }
        h.set_cksum();
        h
    }
}

/// One pax record: `"<len> <key>=<value>\n"`, the length counting itself.
pub fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut r = format!("{len} {key}=").into_bytes();
    r.extend_from_slice(value);
    r.push(b'\n');
    assert_eq!(r.len(), len, "pax record length");
    r
}

/// What goes into the tar, in order.
#[derive(Clone, Debug)]
pub enum Item {
    /// `manifest.json` (the bytes written: [`Package::written_manifest`] or the signed ones).
    Manifest,
    /// `manifest.sig`.
    Signature,
    Entry(Entry),
}

/// How the tar is compressed.
#[derive(Clone, Debug)]
pub struct Zstd {
    /// False: the tar as is (not a zstd stream at all).
    pub compress: bool,
    pub level: i32,
    pub window_log: Option<u32>,
    pub long_distance_matching: bool,
}

impl Default for Zstd {
    fn default() -> Zstd {
        Zstd { compress: true, level: 3, window_log: None, long_distance_matching: false }
    }
}

/// A package to build: every knob public.
#[derive(Clone)]
pub struct Package {
    /// `manifest.json` as signed.
    pub manifest: Value,
    pub signer: Signer,
    /// Flip a bit of the signature value.
    pub corrupt_signature: bool,
    /// Bytes written as `manifest.json` instead of the signed ones.
    pub written_manifest: Option<Vec<u8>>,
    pub layout: Vec<Item>,
    pub zstd: Zstd,
    /// Keep only this share (in percent) of the compressed bytes.
    pub truncate_percent: Option<u64>,
}

/// The manifest entry of a file.
pub fn listed(path: &str, body: &Body) -> Value {
    let (size, sha256) = body.digest();
    json!({"path": path, "size": size, "sha256": sha256})
}

impl Package {
    /// A valid package: the manifest lists `files` honestly and the tar holds the manifest, the
    /// signature and the files, in that order.
    pub fn honest(
        signer: &Signer,
        segment_id: &str,
        version: u64,
        device_ids: &[&str],
        files: Vec<(String, Body)>,
    ) -> Package {
        let mut manifest = json!({
            "format": "vistter-segment/1",
            "segment_id": segment_id,
            "version": version,
            "created_at": "2026-11-24T12:00:00Z",
            "expires_at": "2099-01-01T00:00:00Z",
            "entrypoint": "timeline.json",
            "files": files.iter().map(|(p, b)| listed(p, b)).collect::<Vec<_>>(),
        });
        if !device_ids.is_empty() {
            manifest["targets"] = json!({"device_ids": device_ids});
        }
        let mut layout = vec![Item::Manifest, Item::Signature];
        layout.extend(files.into_iter().map(|(p, b)| Item::Entry(Entry::file(&p, b))));
        Package {
            manifest,
            signer: signer.clone(),
            corrupt_signature: false,
            written_manifest: None,
            layout,
            zstd: Zstd::default(),
            truncate_percent: None,
        }
    }

    /// The exact bytes signed as `manifest.json`.
    pub fn manifest_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(&self.manifest).expect("serializes")
    }

    /// `manifest.sig`'s bytes.
    pub fn signature_bytes(&self) -> Vec<u8> {
        let mut signed = SIGNED_PREFIX.to_vec();
        signed.extend(self.manifest_bytes());
        let mut value = self.signer.key.sign(&signed).to_bytes();
        if self.corrupt_signature {
            value[40] ^= 0x01;
        }
        serde_json::to_vec(&json!({
            "alg": "ed25519",
            "key_id": self.signer.key_id,
            "value": base64::engine::general_purpose::STANDARD.encode(value),
        }))
        .expect("serializes")
    }

    /// The index of the layout's entry named `name`.
    pub fn position(&self, name: &str) -> usize {
        self.layout
            .iter()
            .position(|i| matches!(i, Item::Entry(e) if e.name == name.as_bytes()))
            .unwrap_or_else(|| panic!("no entry {name} in the layout"))
    }

    /// The entry named `name`.
    pub fn entry_mut(&mut self, name: &str) -> &mut Entry {
        let i = self.position(name);
        match &mut self.layout[i] {
            Item::Entry(e) => e,
            _ => unreachable!(),
        }
    }

    /// Replaces a file's content, in the tar and (before signing) in the manifest.
    pub fn set_file(&mut self, name: &str, body: Body) {
        let entry = listed(name, &body);
        self.entry_mut(name).body = body;
        let files = self.manifest["files"].as_array_mut().expect("a files list");
        let f = files.iter_mut().find(|f| f["path"] == name).unwrap_or_else(|| panic!("{name} is not listed"));
        *f = entry;
    }

    /// Writes the (uncompressed) tar.
    pub fn write_tar(&self, w: &mut dyn Write) -> io::Result<()> {
        let manifest = self.written_manifest.clone().unwrap_or_else(|| self.manifest_bytes());
        let sig = self.signature_bytes();
        for item in &self.layout {
            let e = match item {
                Item::Manifest => Entry::file(MANIFEST, Body::Bytes(manifest.clone())),
                Item::Signature => Entry::file(SIGNATURE, Body::Bytes(sig.clone())),
                Item::Entry(e) => e.clone(),
            };
            w.write_all(e.header().as_bytes())?;
            e.body.write(w)?;
            let pad = (512 - e.body.len() % 512) % 512;
            w.write_all(&vec![0u8; pad as usize])?;
        }
        // The end of the archive: two zero blocks.
        w.write_all(&[0u8; 1024])
    }

    pub fn tar_bytes(&self) -> Vec<u8> {
        let mut v = Vec::new();
        self.write_tar(&mut v).expect("writing to memory");
        v
    }

    /// The `.vseg` bytes.
    pub fn build(&self) -> Vec<u8> {
        let mut out = if self.zstd.compress {
            let mut enc = zstd::stream::write::Encoder::new(Vec::new(), self.zstd.level).expect("zstd encoder");
            enc.include_checksum(true).expect("zstd checksum");
            if self.zstd.long_distance_matching {
                enc.long_distance_matching(true).expect("zstd long distance matching");
            }
            if let Some(log) = self.zstd.window_log {
                enc.window_log(log).expect("zstd window log");
            }
            self.write_tar(&mut enc).expect("compressing in memory");
            enc.finish().expect("zstd finish")
        } else {
            self.tar_bytes()
        };
        if let Some(p) = self.truncate_percent {
            let keep = (out.len() as u64 * p / 100) as usize;
            out.truncate(keep);
        }
        out
    }

    pub fn write_to(&self, path: &Path) -> PathBuf {
        std::fs::write(path, self.build()).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        path.to_path_buf()
    }
}

/// Compresses `data` as one zstd frame (level 3, with a checksum).
pub fn compress(data: &[u8]) -> Vec<u8> {
    let mut enc = zstd::stream::write::Encoder::new(Vec::new(), 3).expect("zstd encoder");
    enc.include_checksum(true).expect("zstd checksum");
    enc.write_all(data).expect("compressing in memory");
    enc.finish().expect("zstd finish")
}

/// The window log a zstd frame header declares (None: not a zstd frame, or a single-segment frame
/// without a window descriptor).
pub fn frame_window_log(bytes: &[u8]) -> Option<u32> {
    if bytes.len() < 6 || bytes[..4] != [0x28, 0xb5, 0x2f, 0xfd] {
        return None;
    }
    let descriptor = bytes[4];
    if descriptor & 0x20 != 0 {
        return None;
    }
    Some(10 + (bytes[5] >> 3) as u32)
}

/// Deterministic, incompressible bytes.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// A timeline the importer accepts without cameras.
pub fn timeline_json(name: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"id": TIMELINE_ID, "name": name, "duration": 10, "fps": 25, "resolution": "320x180",
        "loop": true, "tracks": {"video": {"cues": [{"id": "c1", "start_time": 0, "duration": 10,
        "action": "show_slate", "params": {}}]}, "overlays": []}}))
    .expect("serializes")
}

/// Every threat [`Fixture::threat`] makes, by name.
pub const THREATS: &[&str] = &[
    "bad_signature",
    "unknown_key",
    "manifest_edited_after_signing",
    "flipped_payload_byte",
    "missing_file",
    "extra_file",
    "duplicate_entry",
    "dotdot_path",
    "absolute_path",
    "symlink",
    "hardlink",
    "char_device",
    "fifo",
    "manifest_not_first",
    "signature_not_second",
    "decompression_bomb",
    "too_many_entries",
    "zstd_window_over_limit",
    "truncated_archive",
    "expired",
    "another_device",
    "rollback",
    "non_utf8_name",
    "key_without_segment_role",
    "long_name_bomb",
    // More of the same kinds.
    "pax_header_bomb",
    "pax_header_chain",
    "rollback_same_version",
    "understated_size",
    "block_device",
    "directory_entry",
    "pax_path_escape",
    "long_name_escape",
    "ustar_prefix_escape",
    "pax_size_override",
    "manifest_again_as_payload",
    "unsigned",
    "empty_archive",
    "not_zstd",
    "unknown_manifest_field",
    "invalid_timeline",
];

/// The package's second file (the one most fixtures tamper with).
pub const NOTE: &str = "assets/note.txt";
/// Where the path-escape fixtures aim, relative to `<data_dir>` (they stage under
/// `<data_dir>/segments/.staging/<id>/`).
pub const ESCAPE: &str = "assets/../../../../escape.txt";
/// The size a decompression bomb expands to.
pub const BOMB_BYTES: u64 = 2 << 30;
/// The size of a long-name or pax record bomb.
pub const NAME_BOMB_BYTES: u64 = 8 * MIB;

/// Keys and targets the fixtures are made for.
pub struct Fixture {
    /// Trusted with the `segment` role.
    pub segment_key: Signer,
    /// Trusted with the `command` role only.
    pub command_key: Signer,
    /// Not trusted at all.
    pub stranger: Signer,
    pub device_id: String,
    pub segment_id: String,
    /// The highest version installed on the device: hostile packages carry the next one, the
    /// rollback ones this one and the one below.
    pub installed: u64,
    /// Where `absolute_path` aims (at most 100 bytes).
    pub absolute_target: PathBuf,
    /// Entries the device allows (`too_many_entries` goes past it).
    pub max_entries: u64,
}

impl Fixture {
    pub fn new(device_id: &str, absolute_target: &Path) -> Fixture {
        Fixture {
            segment_key: Signer::generate("seg-signer"),
            command_key: Signer::generate("cmd-signer"),
            stranger: Signer::generate("stranger"),
            device_id: device_id.into(),
            segment_id: "seg".into(),
            installed: 3,
            absolute_target: absolute_target.to_path_buf(),
            max_entries: 64,
        }
    }

    /// The files of version `version` (its timeline's name and its note say which).
    pub fn files(&self, version: u64) -> Vec<(String, Body)> {
        vec![
            ("timeline.json".into(), Body::Bytes(timeline_json(&format!("seg v{version}")))),
            (NOTE.into(), Body::Bytes(format!("the note of version {version}\n").into_bytes())),
        ]
    }

    /// A valid package of `version`, for this device.
    pub fn good(&self, version: u64) -> Package {
        self.package(version, self.files(version))
    }

    fn package(&self, version: u64, files: Vec<(String, Body)>) -> Package {
        Package::honest(&self.segment_key, &self.segment_id, version, &[&self.device_id], files)
    }

    /// A hostile package, by name (one of [`THREATS`]). Each is valid but for its one threat.
    pub fn threat(&self, name: &str) -> Package {
        let next = self.installed + 1;
        let mut p = self.good(next);
        match name {
            "bad_signature" => p.corrupt_signature = true,
            "unknown_key" => p.signer = self.stranger.clone(),
            "key_without_segment_role" => p.signer = self.command_key.clone(),
            "manifest_edited_after_signing" => {
                // The note swapped and the manifest made to match it, the signature left as it was.
                let evil = Body::Bytes(b"an edited note\n".to_vec());
                let mut edited = p.manifest.clone();
                edited["files"][1] = listed(NOTE, &evil);
                p.written_manifest = Some(serde_json::to_vec(&edited).expect("serializes"));
                p.entry_mut(NOTE).body = evil;
            }
            "flipped_payload_byte" => {
                if let Body::Bytes(b) = &mut p.entry_mut(NOTE).body {
                    b[4] ^= 0x20;
                }
            }
            "missing_file" => {
                let i = p.position(NOTE);
                p.layout.remove(i);
            }
            "extra_file" => p.layout.push(Item::Entry(Entry::file("assets/extra.bin", Body::Bytes(b"extra".to_vec())))),
            "duplicate_entry" => {
                // A second timeline.json, other content, after the first was checked.
                let other = timeline_json("replaced after the check");
                p.layout.push(Item::Entry(Entry::file("timeline.json", Body::Bytes(other))));
            }
            "manifest_again_as_payload" => {
                let m = p.manifest_bytes();
                p.layout.push(Item::Entry(Entry::file(MANIFEST, Body::Bytes(m))));
            }
            "dotdot_path" => p.entry_mut(NOTE).name = ESCAPE.as_bytes().to_vec(),
            "absolute_path" => {
                let target = self.absolute_target.as_os_str().as_encoded_bytes().to_vec();
                p.entry_mut(NOTE).name = target;
            }
            "non_utf8_name" => p.entry_mut(NOTE).name = b"assets/\xff\xfenote.txt".to_vec(),
            "symlink" => {
                // The classic: "assets" made a link out of the package, then a file through it.
                let i = p.position(NOTE);
                p.layout.insert(i, Item::Entry(Entry::link("assets", EntryType::Symlink, "../../../..")));
            }
            "hardlink" => *p.entry_mut(NOTE) = Entry::link(NOTE, EntryType::Link, "/etc/passwd"),
            "char_device" => *p.entry_mut(NOTE) = Entry::device(NOTE, EntryType::Char, 1, 3),
            "block_device" => *p.entry_mut(NOTE) = Entry::device(NOTE, EntryType::Block, 8, 0),
            "fifo" => *p.entry_mut(NOTE) = Entry::raw(NOTE.as_bytes(), EntryType::Fifo, Body::Bytes(Vec::new())),
            "directory_entry" => {
                let i = p.position(NOTE);
                p.layout.insert(i, Item::Entry(Entry::raw(b"assets", EntryType::Directory, Body::Bytes(Vec::new()))));
            }
            "manifest_not_first" => p.layout.swap(0, 1),
            "signature_not_second" => {
                let sig = p.layout.remove(1);
                p.layout.insert(2, sig);
            }
            "unsigned" => {
                p.layout.remove(1);
            }
            "empty_archive" => p.layout.clear(),
            "decompression_bomb" => {
                // Declared honestly: 2 GiB of zeros, a few hundred KiB compressed.
                let mut files = self.files(next);
                files[1] = ("assets/zeros.bin".into(), Body::Zeros(BOMB_BYTES));
                p = self.package(next, files);
            }
            "understated_size" => {
                // The manifest lists the small note; the entry declares (and holds) 256 MiB.
                p.entry_mut(NOTE).body = Body::Zeros(256 * MIB);
            }
            "too_many_entries" => {
                let mut files = self.files(next);
                files.extend(
                    (0..self.max_entries + 10).map(|i| (format!("assets/n{i}.txt"), Body::Bytes(vec![b'n'; 3]))),
                );
                p = self.package(next, files);
            }
            "pax_header_chain" => {
                // Pax headers without a path, chained: each is bounded, so must their number be.
                let i = p.position(NOTE);
                for _ in 0..self.max_entries + 10 {
                    p.layout.insert(i, Item::Entry(Entry::pax(&[("comment", &b"x"[..])])));
                }
            }
            "zstd_window_over_limit" => {
                p.zstd.window_log = Some(28);
                p.zstd.long_distance_matching = true;
            }
            "truncated_archive" => {
                let mut files = self.files(next);
                files.push(("assets/noise.bin".into(), Body::Bytes(noise(512 * 1024, 7))));
                p = self.package(next, files);
                p.truncate_percent = Some(60);
            }
            "not_zstd" => p.zstd.compress = false,
            "expired" => p.manifest["expires_at"] = "2020-01-01T00:00:00Z".into(),
            "another_device" => p.manifest["targets"] = json!({"device_ids": ["vs-other"]}),
            "unknown_manifest_field" => p.manifest["files"][1]["mode"] = 0o4755.into(),
            "invalid_timeline" => {
                // Signed and whole, but its timeline does not check: refused after staging.
                p.set_file("timeline.json", Body::Bytes(br#"{"id":"seg-tl","name":"no tracks"}"#.to_vec()));
            }
            "rollback" => {
                // Never installed, below the installed version.
                p = self.good(self.installed - 1);
                p.set_file(NOTE, Body::Bytes(b"an older note, newly signed\n".to_vec()));
            }
            "rollback_same_version" => {
                p = self.good(self.installed);
                p.set_file(NOTE, Body::Bytes(b"other content, same version\n".to_vec()));
            }
            "long_name_bomb" => {
                let i = p.position(NOTE);
                p.layout
                    .insert(i, Item::Entry(Entry::gnu_long_name(Body::Bytes(vec![b'a'; NAME_BOMB_BYTES as usize]))));
            }
            "pax_header_bomb" => {
                let i = p.position(NOTE);
                let big = vec![b'a'; NAME_BOMB_BYTES as usize];
                p.layout.insert(i, Item::Entry(Entry::pax(&[("comment", big.as_slice())])));
            }
            "long_name_escape" => {
                let i = p.position(NOTE);
                let mut name = ESCAPE.as_bytes().to_vec();
                name.push(0);
                p.layout.insert(i, Item::Entry(Entry::gnu_long_name(Body::Bytes(name))));
            }
            "ustar_prefix_escape" => {
                // A ustar path is `prefix/name`: a reader looking at the name alone sees "escape.txt".
                let (prefix, file) = ESCAPE.rsplit_once('/').expect("a path with a folder");
                let e = p.entry_mut(NOTE);
                e.name = file.as_bytes().to_vec();
                e.ustar_prefix = Some(prefix.as_bytes().to_vec());
            }
            "pax_path_escape" => {
                let i = p.position(NOTE);
                p.layout.insert(i, Item::Entry(Entry::pax(&[("path", ESCAPE.as_bytes())])));
            }
            "pax_size_override" => {
                // A pax size other readers would trust over the header's: parsers would disagree.
                let i = p.position(NOTE);
                p.layout.insert(i, Item::Entry(Entry::pax(&[("size", &b"1"[..])])));
            }
            other => panic!("no fixture {other:?}; the fixtures are {THREATS:?}"),
        }
        p
    }
}
