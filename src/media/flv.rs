//! An incremental FLV tag reader (just enough of FLV for the fan-out).
//!
//! Layout: a 9-byte header (`FLV`, version 1, flags, header size 9) followed by `PreviousTagSize0`
//! (u32 0), then tags: type (8 audio, 9 video, 18 script), 24-bit data size, 24-bit timestamp +
//! 8-bit extension (the high byte), 24-bit stream id (0), the data, and the u32 previous tag size.
//! The reader is fed arbitrary chunks, returns whole items, and rejects malformed input with an
//! error instead of panicking or buffering without bound.

use bytes::{Buf, BufMut, Bytes, BytesMut};

/// The largest tag the reader accepts (FLV's size field allows 16 MiB; real tags are far smaller).
pub const MAX_TAG_SIZE: usize = 8 * 1024 * 1024;
const HEADER_LEN: usize = 9;
const TAG_HEADER_LEN: usize = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TagKind {
    Audio,
    Video,
    Script,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tag {
    pub kind: TagKind,
    /// Milliseconds, with the extension byte applied.
    pub timestamp: u32,
    pub data: Bytes,
}

impl Tag {
    /// A video keyframe a decoder can start at: frame type 1 and, for AVC, a NALU packet (not the
    /// sequence header, not the end-of-sequence tag FFmpeg writes last).
    pub fn is_keyframe(&self) -> bool {
        match (self.kind, self.data.first()) {
            (TagKind::Video, Some(b)) if b >> 4 == 1 => b & 0x0f != 7 || self.data.get(1) == Some(&1),
            _ => false,
        }
    }

    /// AVC sequence header (codec 7, packet type 0) or AAC sequence header (format 10, type 0).
    pub fn is_sequence_header(&self) -> bool {
        match self.kind {
            TagKind::Video => self.data.len() >= 2 && self.data[0] & 0x0f == 7 && self.data[1] == 0,
            TagKind::Audio => self.data.len() >= 2 && self.data[0] >> 4 == 10 && self.data[1] == 0,
            TagKind::Script => false,
        }
    }

    /// The tag as it appears in a stream: header, data, previous-tag-size.
    pub fn encode(&self) -> Bytes {
        let mut b = BytesMut::with_capacity(TAG_HEADER_LEN + self.data.len() + 4);
        b.put_u8(match self.kind {
            TagKind::Audio => 8,
            TagKind::Video => 9,
            TagKind::Script => 18,
        });
        let len = self.data.len() as u32;
        b.put_slice(&len.to_be_bytes()[1..]);
        b.put_slice(&(self.timestamp & 0x00ff_ffff).to_be_bytes()[1..]);
        b.put_u8((self.timestamp >> 24) as u8);
        b.put_slice(&[0, 0, 0]);
        b.put_slice(&self.data);
        b.put_u32(TAG_HEADER_LEN as u32 + len);
        b.freeze()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// The file header plus PreviousTagSize0 (13 bytes), as read.
    Header(Bytes),
    Tag(Tag),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlvError {
    #[error("not an FLV stream (bad signature)")]
    BadSignature,
    #[error("unsupported FLV header (version {version}, header size {size})")]
    BadHeader { version: u8, size: u32 },
    #[error("unknown FLV tag type {0}")]
    BadTagType(u8),
    #[error("FLV tag of {0} bytes exceeds the limit")]
    TagTooLarge(usize),
    #[error("FLV tag is encrypted/filtered (unsupported)")]
    Filtered,
}

/// Incremental reader. After an error the stream is unusable: drop the reader.
#[derive(Debug, Default)]
pub struct FlvReader {
    buf: BytesMut,
    header_done: bool,
}

impl FlvReader {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete item, `Ok(None)` when more bytes are needed.
    pub fn next_item(&mut self) -> Result<Option<Item>, FlvError> {
        if !self.header_done {
            if self.buf.len() < 3 {
                return Ok(None);
            }
            if &self.buf[..3] != b"FLV" {
                return Err(FlvError::BadSignature);
            }
            if self.buf.len() < HEADER_LEN + 4 {
                return Ok(None);
            }
            let version = self.buf[3];
            let size = u32::from_be_bytes([self.buf[5], self.buf[6], self.buf[7], self.buf[8]]);
            if version != 1 || size != HEADER_LEN as u32 {
                return Err(FlvError::BadHeader { version, size });
            }
            self.header_done = true;
            return Ok(Some(Item::Header(self.buf.split_to(HEADER_LEN + 4).freeze())));
        }
        if self.buf.len() < TAG_HEADER_LEN {
            return Ok(None);
        }
        let type_byte = self.buf[0];
        if type_byte & 0x20 != 0 {
            return Err(FlvError::Filtered);
        }
        let kind = match type_byte & 0x1f {
            8 => TagKind::Audio,
            9 => TagKind::Video,
            18 => TagKind::Script,
            t => return Err(FlvError::BadTagType(t)),
        };
        let size = u32::from_be_bytes([0, self.buf[1], self.buf[2], self.buf[3]]) as usize;
        if size > MAX_TAG_SIZE {
            return Err(FlvError::TagTooLarge(size));
        }
        let total = TAG_HEADER_LEN + size + 4;
        if self.buf.len() < total {
            self.buf.reserve(total - self.buf.len());
            return Ok(None);
        }
        let ts = u32::from_be_bytes([self.buf[7], self.buf[4], self.buf[5], self.buf[6]]);
        let mut tag = self.buf.split_to(total);
        tag.advance(TAG_HEADER_LEN);
        let data = tag.split_to(size).freeze();
        // The trailing PreviousTagSize is not checked: some muxers write it wrong, and it carries
        // nothing we need.
        Ok(Some(Item::Tag(Tag { kind, timestamp: ts, data })))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A small FLV stream shaped like FFmpeg's output: header, metadata, AVC + AAC sequence headers,
    /// a keyframe, audio, an inter frame, a second keyframe.
    pub fn sample_stream() -> Vec<u8> {
        let mut v = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
        let tags = [
            Tag {
                kind: TagKind::Script,
                timestamp: 0,
                data: Bytes::from_static(b"\x02\x00\x0aonMetaData\x08\x00\x00\x00\x00\x00\x00\x09"),
            },
            Tag { kind: TagKind::Video, timestamp: 0, data: Bytes::from_static(&[0x17, 0, 0, 0, 0, 1, 0x64, 0, 0x1f]) },
            Tag { kind: TagKind::Audio, timestamp: 0, data: Bytes::from_static(&[0xaf, 0, 0x11, 0x90]) },
            Tag { kind: TagKind::Video, timestamp: 0, data: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]) },
            Tag { kind: TagKind::Audio, timestamp: 21, data: Bytes::from_static(&[0xaf, 1, 0x21, 0x10]) },
            Tag {
                kind: TagKind::Video,
                timestamp: 40,
                data: Bytes::from_static(&[0x27, 1, 0, 0, 0, 0, 0, 0, 1, 0x41]),
            },
            Tag {
                kind: TagKind::Video,
                timestamp: 0x0100_0050,
                data: Bytes::from_static(&[0x17, 1, 0, 0, 0, 0, 0, 0, 1, 0x65]),
            },
        ];
        for t in &tags {
            v.extend_from_slice(&t.encode());
        }
        v
    }

    fn read_all(bytes: &[u8], chunk: usize) -> Result<Vec<Item>, FlvError> {
        let mut r = FlvReader::new();
        let mut out = vec![];
        for c in bytes.chunks(chunk.max(1)) {
            r.push(c);
            while let Some(i) = r.next_item()? {
                out.push(i);
            }
        }
        Ok(out)
    }

    #[test]
    fn reads_header_and_classifies_tags() {
        let items = read_all(&sample_stream(), 7).unwrap();
        assert_eq!(items.len(), 8);
        assert!(matches!(&items[0], Item::Header(h) if h.len() == 13));
        let tags: Vec<&Tag> = items.iter().filter_map(|i| if let Item::Tag(t) = i { Some(t) } else { None }).collect();
        assert_eq!(tags[0].kind, TagKind::Script);
        assert!(tags[1].is_sequence_header() && !tags[1].is_keyframe());
        assert!(tags[2].is_sequence_header());
        assert!(tags[3].is_keyframe() && !tags[3].is_sequence_header());
        let eos = Tag { kind: TagKind::Video, timestamp: 9, data: Bytes::from_static(&[0x17, 2, 0, 0, 0]) };
        assert!(!eos.is_keyframe(), "end of sequence is not a keyframe");
        assert!(!tags[5].is_keyframe());
        assert_eq!(tags[6].timestamp, 0x0100_0050, "extended timestamp byte");
    }

    #[test]
    fn encode_round_trips() {
        let stream = sample_stream();
        let items = read_all(&stream, 1000).unwrap();
        let mut out = vec![];
        for i in items {
            match i {
                Item::Header(h) => out.extend_from_slice(&h),
                Item::Tag(t) => out.extend_from_slice(&t.encode()),
            }
        }
        assert_eq!(out, stream);
    }

    #[test]
    fn garbage_is_an_error() {
        assert_eq!(read_all(b"RIFF\x00\x00\x00\x00WAVEfmt ", 4).unwrap_err(), FlvError::BadSignature);
        let mut s = sample_stream();
        s[13] = 0x07; // first tag type
        assert_eq!(read_all(&s, 64).unwrap_err(), FlvError::BadTagType(7));
        let mut s = sample_stream();
        s[14] = 0xff; // tag size 16 MiB-ish
        assert!(matches!(read_all(&s, 64).unwrap_err(), FlvError::TagTooLarge(_)));
    }

    #[test]
    fn truncated_input_waits_for_more() {
        let s = sample_stream();
        let cut = s.len() - 3;
        let items = read_all(&s[..cut], 5).unwrap();
        assert_eq!(items.len(), 7, "the last, incomplete tag is not returned");
    }

    /// Captured from FFmpeg (libx264 + aac, 2 s, keyframe every second): see tests/data/flv/.
    const CAPTURED: &[u8] = include_bytes!("../../tests/data/flv/encoder-output.flv");

    #[test]
    fn parses_captured_encoder_output() {
        let items = read_all(CAPTURED, 4096).unwrap();
        let tags: Vec<&Tag> = items.iter().filter_map(|i| if let Item::Tag(t) = i { Some(t) } else { None }).collect();
        assert!(matches!(items[0], Item::Header(_)));
        assert_eq!(tags[0].kind, TagKind::Script, "onMetaData first");
        assert_eq!(tags.iter().filter(|t| t.is_sequence_header()).count(), 2, "one AVC and one AAC sequence header");
        let keyframes = tags.iter().filter(|t| t.is_keyframe()).count();
        assert_eq!(keyframes, 2, "2 s at a keyframe per second");
        let frames = tags.iter().filter(|t| t.kind == TagKind::Video && t.data.get(1) == Some(&1)).count();
        assert_eq!(frames, 20, "10 fps for 2 s (plus the end-of-sequence tag, not counted)");
        assert!(tags.iter().any(|t| t.kind == TagKind::Audio && !t.is_sequence_header()));
        let video_ts: Vec<u32> = tags.iter().filter(|t| t.kind == TagKind::Video).map(|t| t.timestamp).collect();
        assert!(video_ts.windows(2).all(|w| w[0] <= w[1]));
        assert!(*video_ts.last().unwrap() >= 1800);
    }

    proptest! {
        #[test]
        fn captured_output_truncated_or_corrupted_never_panics(cut in 0usize..CAPTURED.len(), flip in 0usize..CAPTURED.len(), byte: u8) {
            let _ = read_all(&CAPTURED[..cut], 333);
            let mut bad = CAPTURED.to_vec();
            bad[flip] = byte;
            let _ = read_all(&bad, 1000);
        }

        #[test]
        fn any_chunking_reads_the_same(chunk in 1usize..64) {
            prop_assert_eq!(read_all(&sample_stream(), chunk).unwrap(), read_all(&sample_stream(), 4096).unwrap());
        }

        #[test]
        fn random_bytes_never_panic(mut data in proptest::collection::vec(any::<u8>(), 0..4096), with_header: bool) {
            if with_header {
                let mut d = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00".to_vec();
                d.append(&mut data);
                data = d;
            }
            let _ = read_all(&data, 17);
        }

        #[test]
        fn truncation_anywhere_never_panics(cut in 0usize..200) {
            let s = sample_stream();
            let cut = cut.min(s.len());
            let _ = read_all(&s[..cut], 3).unwrap();
        }
    }
}
