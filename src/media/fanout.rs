//! Fan-out of one FLV program to many destinations.
//!
//! The producer (relay ingest now, the program encoder later) pushes parsed FLV items; every
//! destination's pusher holds a [`Subscription`]. The fan-out keeps what a newcomer needs to start
//! decoding at once: the FLV header, the metadata, the AVC/AAC sequence headers and every tag since
//! the last keyframe. Each subscription has its own bounded queue: when a destination is slow or
//! gone, its queue overflows, is emptied and refills from the next keyframe; the producer and the
//! other destinations never wait (one slow destination must never slow the others; the tests measure exactly that).
//!
//! When the producer restarts (a new FFmpeg generation, timestamps starting again at 0), timestamps
//! are rebased so each subscriber keeps seeing one monotonic stream; a healthy destination's
//! connection survives an upstream restart.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use tokio::sync::Notify;

use super::flv::{Item, Tag, TagKind};

/// The header FFmpeg writes for audio+video FLV; used when a subscriber arrives before the producer.
const DEFAULT_HEADER: &[u8] = b"FLV\x01\x05\x00\x00\x00\x09\x00\x00\x00\x00";
/// A GOP larger than this is not cached (a newcomer then waits for the next keyframe).
const MAX_GOP_BYTES: usize = 32 * 1024 * 1024;
/// Gap inserted between the last tag of one producer generation and the first of the next.
const REBASE_GAP_MS: u32 = 40;

#[derive(Clone)]
pub struct Fanout {
    shared: Arc<Shared>,
}

struct Shared {
    inner: Mutex<Inner>,
    queue_bytes: usize,
}

#[derive(Default)]
struct Inner {
    header: Option<Bytes>,
    metadata: Option<Bytes>,
    avc_seq: Option<Bytes>,
    aac_seq: Option<Bytes>,
    /// Encoded tags since (and including) the last keyframe.
    gop: Vec<Bytes>,
    gop_bytes: usize,
    subs: HashMap<u64, Arc<SubShared>>,
    next_sub: u64,
    /// Producer generations seen (a new FLV header starts one).
    sessions: u64,
    /// First input timestamp of the current generation, and where it maps to.
    session_base: Option<(u32, u32)>,
    last_out_ts: Option<u32>,
    closed: bool,
    tags_in: u64,
}

struct SubShared {
    queue: Mutex<SubQueue>,
    notify: Notify,
    /// Bytes offered to this subscriber (delivered or dropped): the pusher's input activity.
    offered: Arc<AtomicU64>,
}

struct SubQueue {
    items: VecDeque<Bytes>,
    bytes: usize,
    cap: usize,
    waiting_keyframe: bool,
    dropped_tags: u64,
    overflows: u64,
    closed: bool,
}

/// Counters of one subscription, for status.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct SubStats {
    pub queued_bytes: usize,
    pub dropped_tags: u64,
    pub overflows: u64,
}

impl Fanout {
    pub fn new(queue_bytes: usize) -> Fanout {
        Fanout { shared: Arc::new(Shared { inner: Mutex::new(Inner::default()), queue_bytes }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().expect("fanout lock")
    }

    /// Tags pushed so far (for tests and status).
    pub fn tags_in(&self) -> u64 {
        self.lock().tags_in
    }

    /// Feeds one item from the producer.
    pub fn push(&self, item: Item) {
        let mut inner = self.lock();
        match item {
            Item::Header(h) => {
                inner.sessions += 1;
                inner.session_base = None;
                // The previous generation's GOP cannot be decoded with the new sequence headers.
                inner.gop.clear();
                inner.gop_bytes = 0;
                if inner.header.is_none() {
                    inner.header = Some(h);
                }
            }
            Item::Tag(tag) => inner.push_tag(tag),
        }
    }

    /// Ends the stream for all subscribers (their `next_batch` returns `None` once drained).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        for s in inner.subs.values() {
            s.queue.lock().expect("queue lock").closed = true;
            s.notify.notify_one();
        }
    }

    /// A new subscriber starts from the header, metadata, sequence headers and the current GOP.
    pub fn subscribe(&self, offered: Arc<AtomicU64>) -> Subscription {
        let mut inner = self.lock();
        let mut items = VecDeque::new();
        items.push_back(inner.header.clone().unwrap_or_else(|| Bytes::from_static(DEFAULT_HEADER)));
        items.extend(inner.metadata.iter().cloned());
        items.extend(inner.avc_seq.iter().cloned());
        items.extend(inner.aac_seq.iter().cloned());
        items.extend(inner.gop.iter().cloned());
        let bytes = items.iter().map(Bytes::len).sum();
        let sub = Arc::new(SubShared {
            queue: Mutex::new(SubQueue {
                items,
                bytes,
                cap: self.shared.queue_bytes.max(bytes),
                waiting_keyframe: inner.gop.is_empty(),
                dropped_tags: 0,
                overflows: 0,
                closed: inner.closed,
            }),
            notify: Notify::new(),
            offered,
        });
        let id = inner.next_sub;
        inner.next_sub += 1;
        inner.subs.insert(id, sub.clone());
        Subscription { id, fanout: self.clone(), sub }
    }
}

impl Inner {
    fn push_tag(&mut self, tag: Tag) {
        self.tags_in += 1;
        // Rebase: the first tag of a generation continues just after the last tag sent.
        let (base_in, base_out) = *self.session_base.get_or_insert_with(|| {
            let out = match self.last_out_ts {
                Some(last) => last.saturating_add(REBASE_GAP_MS),
                None => tag.timestamp,
            };
            (tag.timestamp, out)
        });
        let ts = base_out.saturating_add(tag.timestamp.saturating_sub(base_in));
        if tag.kind != TagKind::Script {
            self.last_out_ts = Some(self.last_out_ts.map_or(ts, |l| l.max(ts)));
        }
        let keyframe = tag.is_keyframe();
        let seq = tag.is_sequence_header();
        let encoded = Tag { timestamp: ts, ..tag.clone() }.encode();
        match tag.kind {
            TagKind::Script => {
                // Metadata of later generations is only cached: a mid-stream onMetaData is noise.
                let first = self.sessions <= 1;
                self.metadata = Some(encoded.clone());
                if !first {
                    return;
                }
            }
            TagKind::Video if seq => self.avc_seq = Some(encoded.clone()),
            TagKind::Audio if seq => self.aac_seq = Some(encoded.clone()),
            _ if keyframe => {
                self.gop.clear();
                self.gop_bytes = 0;
                self.gop.push(encoded.clone());
                self.gop_bytes = encoded.len();
            }
            _ => {
                if !self.gop.is_empty() {
                    if self.gop_bytes + encoded.len() > MAX_GOP_BYTES {
                        self.gop.clear();
                        self.gop_bytes = 0;
                    } else {
                        self.gop_bytes += encoded.len();
                        self.gop.push(encoded.clone());
                    }
                }
            }
        }
        let headers = (self.avc_seq.clone(), self.aac_seq.clone());
        for s in self.subs.values() {
            s.offer(&encoded, keyframe, seq || tag.kind == TagKind::Script, &headers);
        }
    }
}

impl SubShared {
    fn offer(&self, b: &Bytes, keyframe: bool, header: bool, seq: &(Option<Bytes>, Option<Bytes>)) {
        self.offered.fetch_add(b.len() as u64, Ordering::Relaxed);
        let mut q = self.queue.lock().expect("queue lock");
        if q.waiting_keyframe && !header {
            if keyframe {
                q.waiting_keyframe = false;
            } else {
                q.dropped_tags += 1;
                return;
            }
        }
        if q.bytes + b.len() > q.cap && !header {
            // Overflow: drop everything queued and restart this destination at the next keyframe,
            // keeping the sequence headers so its decoder can still start there.
            q.dropped_tags += q.items.len() as u64;
            q.overflows += 1;
            q.items.clear();
            q.bytes = 0;
            for h in [&seq.0, &seq.1].into_iter().flatten() {
                q.bytes += h.len();
                q.items.push_back(h.clone());
            }
            if !keyframe {
                q.waiting_keyframe = true;
                q.dropped_tags += 1;
                self.notify.notify_one();
                return;
            }
        }
        q.bytes += b.len();
        q.items.push_back(b.clone());
        drop(q);
        self.notify.notify_one();
    }
}

/// One destination's view of the stream. Dropping it unsubscribes.
pub struct Subscription {
    id: u64,
    fanout: Fanout,
    sub: Arc<SubShared>,
}

impl Subscription {
    /// Waits for queued data and moves all of it into `out`. `None`: the stream has ended.
    pub async fn next_batch(&self, out: &mut Vec<Bytes>) -> Option<()> {
        loop {
            {
                let mut q = self.sub.queue.lock().expect("queue lock");
                if !q.items.is_empty() {
                    out.extend(q.items.drain(..));
                    q.bytes = 0;
                    return Some(());
                }
                if q.closed {
                    return None;
                }
            }
            self.sub.notify.notified().await;
        }
    }

    pub fn stats(&self) -> SubStats {
        let q = self.sub.queue.lock().expect("queue lock");
        SubStats { queued_bytes: q.bytes, dropped_tags: q.dropped_tags, overflows: q.overflows }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.fanout.lock().subs.remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::flv::{tests::sample_stream, FlvReader};

    fn items(stream: &[u8]) -> Vec<Item> {
        let mut r = FlvReader::new();
        r.push(stream);
        let mut v = vec![];
        while let Some(i) = r.next_item().unwrap() {
            v.push(i);
        }
        v
    }

    fn tags_of(batch: &[Bytes]) -> Vec<Tag> {
        let mut all = DEFAULT_HEADER.to_vec();
        for b in batch.iter().skip(1) {
            all.extend_from_slice(b);
        }
        items(&all).into_iter().filter_map(|i| if let Item::Tag(t) = i { Some(t) } else { None }).collect()
    }

    #[tokio::test]
    async fn late_subscriber_starts_with_headers_and_last_keyframe() {
        let f = Fanout::new(1 << 20);
        for i in items(&sample_stream()) {
            f.push(i);
        }
        let sub = f.subscribe(Default::default());
        let mut out = vec![];
        sub.next_batch(&mut out).await.unwrap();
        assert_eq!(&out[0][..3], b"FLV");
        let tags = tags_of(&out);
        assert_eq!(tags[0].kind, TagKind::Script);
        assert!(tags[1].is_sequence_header() && tags[1].kind == TagKind::Video);
        assert!(tags[2].is_sequence_header() && tags[2].kind == TagKind::Audio);
        assert!(tags[3].is_keyframe(), "GOP cache starts at the last keyframe");
        assert_eq!(tags.len(), 4, "only the last keyframe, not earlier frames");
    }

    #[tokio::test]
    async fn overflow_drops_to_next_keyframe_without_touching_others() {
        let f = Fanout::new(64 * 1024);
        let slow = f.subscribe(Default::default());
        let fast = f.subscribe(Default::default());
        let stream = items(&sample_stream());
        let big_inter = Tag { kind: TagKind::Video, timestamp: 100, data: Bytes::from(vec![0x27u8; 30_000]) };
        let key = Tag { kind: TagKind::Video, timestamp: 200, data: Bytes::from(vec![0x17u8, 1, 0, 0, 0]) };
        for i in stream.iter().take(5).cloned() {
            f.push(i);
        }
        let mut fast_out = vec![];
        for _ in 0..4 {
            f.push(Item::Tag(big_inter.clone()));
            fast.next_batch(&mut fast_out).await.unwrap();
        }
        assert!(slow.stats().overflows >= 1);
        assert!(slow.stats().queued_bytes <= 64 * 1024);
        assert_eq!(fast.stats().overflows, 0);
        f.push(Item::Tag(key.clone()));
        let mut out = vec![];
        slow.next_batch(&mut out).await.unwrap();
        let tags = tags_of(&[Bytes::new()].into_iter().chain(out).collect::<Vec<_>>());
        // After the overflow: sequence headers, then straight to the keyframe.
        assert!(tags.iter().take(2).all(Tag::is_sequence_header), "{tags:?}");
        assert_eq!(tags.last().unwrap().timestamp, 200);
        assert!(tags.last().unwrap().is_keyframe());
    }

    #[tokio::test]
    async fn producer_restart_is_rebased_monotonic() {
        let f = Fanout::new(1 << 20);
        let sub = f.subscribe(Default::default());
        for i in items(&sample_stream()).into_iter().take(7) {
            f.push(i);
        }
        // Second generation: timestamps start at 0 again.
        for i in items(&sample_stream()).into_iter().take(7) {
            f.push(i);
        }
        let mut out = vec![];
        sub.next_batch(&mut out).await.unwrap();
        let ts: Vec<u32> = tags_of(&out).iter().filter(|t| t.kind != TagKind::Script).map(|t| t.timestamp).collect();
        assert!(ts.windows(2).all(|w| w[0] <= w[1]), "{ts:?}");
        assert!(*ts.last().unwrap() >= 40 + REBASE_GAP_MS + 40);
        let scripts = tags_of(&out).iter().filter(|t| t.kind == TagKind::Script).count();
        assert_eq!(scripts, 1, "metadata of the second generation is not forwarded");
    }

    #[tokio::test]
    async fn close_ends_subscriptions_and_drop_unsubscribes() {
        let f = Fanout::new(1 << 20);
        let s = f.subscribe(Default::default());
        let s2 = f.subscribe(Default::default());
        drop(s2);
        assert_eq!(f.lock().subs.len(), 1);
        f.close();
        let mut out = vec![];
        assert!(s.next_batch(&mut out).await.is_some(), "the header is still delivered");
        assert!(s.next_batch(&mut out).await.is_none());
    }
}
