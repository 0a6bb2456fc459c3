//! Hostile sticks and hostile names: links, devices, FIFOs and odd bytes in a drop folder change
//! nothing outside it.

mod hostile_stick_tests {
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::time::{Duration, Instant};

    use tokio_util::sync::CancellationToken;

    use super::super::{watch, DropConfig};
    use crate::segments::testkit::Kit;
    use crate::segments::Limits;

    /// How long a test waits for the watcher to act (it rescans every 200 ms and lets a file
    /// settle for a second).
    const WAIT: Duration = Duration::from_secs(30);

    /// A running watcher over `<dir>/media/*/vistter`, stopped on drop.
    struct Watching {
        stop: CancellationToken,
        task: tokio::task::JoinHandle<()>,
        media: PathBuf,
    }

    impl Drop for Watching {
        fn drop(&mut self) {
            self.stop.cancel();
        }
    }

    fn start(kit: &Kit) -> Watching {
        let media = kit.dir.path().join("media");
        std::fs::create_dir_all(&media).unwrap();
        let cfg = DropConfig {
            globs: vec![format!("{}/*/vistter", media.display())],
            rescan: Duration::from_millis(200),
            trust_path: kit.trust_path.clone(),
            device_id: "vs-drop".into(),
            limits: Limits::default(),
        };
        let stop = CancellationToken::new();
        let task = tokio::spawn(watch(cfg, kit.store.clone(), kit.library.clone(), stop.clone()));
        Watching { stop, task, media }
    }

    /// A stick's `vistter` folder, created.
    fn stick(w: &Watching, name: &str) -> PathBuf {
        let d = w.media.join(name).join("vistter");
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// Waits until `f` holds (or panics after `WAIT`), checking that the watcher still runs.
    async fn until<F, Fut>(w: &Watching, what: &str, mut f: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let t0 = Instant::now();
        while !f().await {
            assert!(!w.task.is_finished(), "the watcher stopped while waiting for {what}");
            assert!(t0.elapsed() < WAIT, "{what}: not within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn result_of(p: &Path) -> Option<serde_json::Value> {
        let meta = std::fs::symlink_metadata(p).ok()?;
        if !meta.is_file() {
            return None;
        }
        serde_json::from_slice(&std::fs::read(p).ok()?).ok()
    }

    /// Path → content of every regular file under `root` (symlinks as their target).
    fn snapshot(root: &Path) -> std::collections::BTreeMap<PathBuf, Vec<u8>> {
        let mut out = std::collections::BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                if t.is_dir() {
                    todo.push(e.path());
                } else if t.is_symlink() {
                    out.insert(e.path(), std::fs::read_link(e.path()).unwrap().into_os_string().into_encoded_bytes());
                } else {
                    out.insert(e.path(), std::fs::read(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_result_tmp_on_a_stick_cannot_overwrite_a_file_outside() {
        let kit = Kit::new().await;
        let w = start(&kit);
        let trust_before = std::fs::read_to_string(&kit.trust_path).unwrap();
        let outside = kit.dir.path().join("outside.bin");
        std::fs::write(&outside, b"precious bytes").unwrap();
        let s = stick(&w, "evil");
        // The refused import's result would go through these links: one at the temporary name,
        // onto the device's trust store, one at the final name, onto another file outside.
        std::fs::write(s.join("x.vseg"), b"not a package at all").unwrap();
        symlink(&kit.trust_path, s.join(".x.vseg.result.json.tmp")).unwrap();
        std::fs::write(s.join("y.vseg"), b"not a package either").unwrap();
        symlink(&outside, s.join("y.vseg.result.json")).unwrap();

        // Both are handled (refused, reported, the outcome recorded after its result file), or
        // the damage is done.
        until(&w, "both packages handled", || async {
            let handled: i64 =
                sqlx::query_scalar("SELECT COUNT(*) FROM segment_drops").fetch_one(kit.store.pool()).await.unwrap();
            handled == 2 || std::fs::read_to_string(&kit.trust_path).unwrap() != trust_before
        })
        .await;
        assert_eq!(
            std::fs::read_to_string(&kit.trust_path).unwrap(),
            trust_before,
            "trust.json was written through the link"
        );
        assert_eq!(std::fs::read(&outside).unwrap(), b"precious bytes", "a file outside was written through the link");
        let rejected = kit.events("segment_rejected").await;
        assert_eq!(rejected.len(), 2, "{rejected:?}");
        for name in ["x", "y"] {
            let r = result_of(&s.join(format!("{name}.vseg.result.json")))
                .unwrap_or_else(|| panic!("{name}.vseg.result.json is not a regular file of JSON"));
            assert_eq!(r["ok"], false, "{r}");
            assert_eq!(r["error"], "corrupt", "{r}");
        }

        // The watcher still runs, and imports a good package dropped afterwards.
        kit.package("after", 1, &s.join("good.vseg"));
        until(&w, "the good package's install", || async { kit.active("after").await == Some(1) }).await;
        assert_eq!(result_of(&s.join("good.vseg.result.json")).expect("its result")["ok"], true);
        assert_eq!(std::fs::read_to_string(&kit.trust_path).unwrap(), trust_before);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_drop_folder_is_not_followed() {
        let kit = Kit::new().await;
        let w = start(&kit);
        // `a-evil/vistter` is a link into a folder the stick does not own (the data dir's kind):
        // a package there must not be imported, nor a result written there.
        let elsewhere = kit.dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        kit.package("linked", 1, &elsewhere.join("p.vseg"));
        std::fs::create_dir_all(w.media.join("a-evil")).unwrap();
        symlink(&elsewhere, w.media.join("a-evil").join("vistter")).unwrap();
        let before = snapshot(&elsewhere);
        // A real stick, scanned after the link in the same passes: once its package is in, the
        // link's folder has had every chance.
        let s = stick(&w, "b-good");
        kit.package("real", 1, &s.join("real.vseg"));
        until(&w, "the real stick's package", || async { kit.active("real").await == Some(1) }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(kit.active("linked").await, None, "a package behind a linked drop folder was installed");
        assert_eq!(snapshot(&elsewhere), before, "something was written behind a linked drop folder");
        assert!(!w.task.is_finished());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_symlinked_vseg_is_skipped() {
        let kit = Kit::new().await;
        let w = start(&kit);
        let elsewhere = kit.dir.path().join("elsewhere");
        std::fs::create_dir_all(&elsewhere).unwrap();
        kit.package("linked", 1, &elsewhere.join("p.vseg"));
        let s = stick(&w, "stick");
        symlink(elsewhere.join("p.vseg"), s.join("a-linked.vseg")).unwrap();
        symlink("/dev/zero", s.join("b-device.vseg")).unwrap();
        kit.package("real", 1, &s.join("z-real.vseg"));
        until(&w, "the real package", || async { kit.active("real").await == Some(1) }).await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(kit.active("linked").await, None, "a package behind a link was installed");
        for n in ["a-linked", "b-device"] {
            assert!(std::fs::symlink_metadata(s.join(format!("{n}.vseg.result.json"))).is_err(), "{n} has a result");
        }
        let skipped = kit.events("segment_rejected").await;
        assert_eq!(skipped.len(), 2, "each linked package is reported once: {skipped:?}");
        assert!(!w.task.is_finished());
    }
}

mod hostile_name_tests {
    use std::collections::BTreeMap;
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::os::unix::fs::symlink;
    use std::path::{Path, PathBuf};
    use std::time::Duration;

    use proptest::prelude::*;
    use tokio_util::sync::CancellationToken;

    use super::super::{scan, DropConfig};
    use crate::segments::testkit::Kit;
    use crate::segments::Limits;

    /// What a hostile name on the stick is.
    #[derive(Debug, Clone)]
    enum Plant {
        Garbage,
        /// A signed, valid package (of its own segment).
        Good,
        /// A link to a file outside the stick (a valid package or the device's trust store).
        LinkOutside,
        LinkToPackageOutside,
        LinkToFolderOutside,
        LinkToDevZero,
        Fifo,
        Folder,
    }

    fn plant() -> impl Strategy<Value = Plant> {
        prop_oneof![
            Just(Plant::Garbage),
            Just(Plant::Good),
            Just(Plant::LinkOutside),
            Just(Plant::LinkToPackageOutside),
            Just(Plant::LinkToFolderOutside),
            Just(Plant::LinkToDevZero),
            Just(Plant::Fifo),
            Just(Plant::Folder),
        ]
    }

    /// Any bytes Linux allows in a name (all but '/' and NUL), `..`, newlines, very long names.
    fn stem() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            proptest::collection::vec(any::<u8>().prop_filter("a name byte", |b| *b != b'/' && *b != 0), 1..24),
            Just(b"..".to_vec()),
            Just(b".".to_vec()),
            Just(b"a\nb".to_vec()),
            Just(b"\n".to_vec()),
            (230usize..=250).prop_map(|n| vec![b'L'; n]),
        ]
    }

    /// A name and what it is; names often end in `.vseg`, and often collide with another
    /// package's result or temporary name.
    fn entry() -> impl Strategy<Value = (Vec<u8>, Plant)> {
        let suffix = prop_oneof![
            Just(&b".vseg"[..]),
            Just(&b".vseg"[..]),
            Just(&b".vseg.result.json"[..]),
            Just(&b".result.json"[..]),
            Just(&b".vseg.result.json.tmp"[..]),
            Just(&b""[..]),
        ];
        (any::<bool>(), stem(), suffix, plant()).prop_map(|(dot, stem, suffix, plant)| {
            let mut name = if dot { b".".to_vec() } else { Vec::new() };
            name.extend_from_slice(&stem);
            name.extend_from_slice(suffix);
            name.truncate(255);
            (name, plant)
        })
    }

    /// Path → kind and content (a link as its target), everything under `root`.
    fn snapshot(root: &Path) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        let mut todo = vec![root.to_path_buf()];
        while let Some(d) = todo.pop() {
            for e in std::fs::read_dir(&d).unwrap().flatten() {
                let t = e.file_type().unwrap();
                let v = if t.is_symlink() {
                    format!("link {:?}", std::fs::read_link(e.path()).unwrap())
                } else if t.is_dir() {
                    todo.push(e.path());
                    "dir".into()
                } else if t.is_file() {
                    format!("file {:?}", std::fs::read(e.path()).unwrap())
                } else {
                    "other".into()
                };
                out.insert(e.path(), v);
            }
        }
        out
    }

    fn runtime() -> &'static tokio::runtime::Runtime {
        static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
        RT.get_or_init(|| tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap())
    }

    async fn case(entries: Vec<(Vec<u8>, Plant)>) -> Result<(), TestCaseError> {
        let kit = Kit::new().await;
        let outside = kit.dir.path().join("outside");
        std::fs::create_dir_all(outside.join("folder")).unwrap();
        std::fs::write(outside.join("precious"), b"precious bytes").unwrap();
        kit.package("linked", 1, &outside.join("p.vseg"));
        let stick = kit.dir.path().join("media").join("stick").join("vistter");
        std::fs::create_dir_all(&stick).unwrap();
        let mut good = Vec::new();
        for (i, (name, plant)) in entries.iter().enumerate() {
            let p = stick.join(OsString::from_vec(name.clone()));
            // Names that cannot be made here ('.', '..', an existing one) are just not there (and an
            // existing name is never written again: opening a FIFO planted there would block).
            if std::fs::symlink_metadata(&p).is_ok() {
                continue;
            }
            let _ = match plant {
                Plant::Garbage => std::fs::write(&p, format!("garbage {i}")),
                Plant::Good => {
                    if std::fs::symlink_metadata(&p).is_err() {
                        let id = format!("good-{i}");
                        let tmp = kit.dir.path().join(format!("{id}.vseg"));
                        kit.package(&id, 1, &tmp);
                        // Imported only under a `.vseg` name.
                        if std::fs::rename(&tmp, &p).is_ok() && p.extension().is_some_and(|x| x == "vseg") {
                            good.push(id);
                        }
                    }
                    Ok(())
                }
                Plant::LinkOutside => symlink(&kit.trust_path, &p),
                Plant::LinkToPackageOutside => symlink(outside.join("p.vseg"), &p),
                Plant::LinkToFolderOutside => symlink(outside.join("folder"), &p),
                Plant::LinkToDevZero => symlink("/dev/zero", &p),
                Plant::Fifo => nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o644))
                    .map_err(std::io::Error::from),
                Plant::Folder => std::fs::create_dir(&p),
            };
        }
        let outside_before = snapshot(&outside);
        let trust_before = std::fs::read(&kit.trust_path).unwrap();
        let stick_before = snapshot(&stick);

        let cfg = DropConfig {
            globs: Vec::new(),
            rescan: Duration::from_secs(1),
            trust_path: kit.trust_path.clone(),
            device_id: "vs-names".into(),
            limits: Limits::default(),
        };
        let (mut settling, mut warned) = Default::default();
        let stop = CancellationToken::new();
        // Twice: the first look only starts each file's settling.
        for _ in 0..2 {
            scan(&stick, &cfg, &kit.store, &kit.library, &mut settling, &mut warned, Duration::ZERO, &stop).await;
        }

        prop_assert_eq!(snapshot(&outside), outside_before, "something outside the stick changed");
        prop_assert_eq!(std::fs::read(&kit.trust_path).unwrap(), trust_before, "trust.json changed");
        prop_assert_eq!(kit.active("linked").await, None, "a package behind a link was installed");
        // On the stick: what was there is unchanged, except a result's name (replaced by a result
        // file, whatever it was) and a temporary name (removed); anything new is a result file.
        let after = snapshot(&stick);
        let is_result =
            |p: &Path| p.parent() == Some(stick.as_path()) && p.as_os_str().as_bytes().ends_with(b".result.json");
        let is_tmp =
            |p: &Path| p.parent() == Some(stick.as_path()) && p.as_os_str().as_bytes().ends_with(b".result.json.tmp");
        for (p, v) in &stick_before {
            if is_result(p) || is_tmp(p) {
                continue;
            }
            // Inside a planted folder named like a result, things go with it.
            if p.ancestors().any(|a| a != p && (is_result(a) || is_tmp(a))) {
                continue;
            }
            prop_assert_eq!(after.get(p), Some(v), "{:?} changed", p);
        }
        for (p, v) in &after {
            if stick_before.get(p) == Some(v) {
                continue;
            }
            prop_assert!(is_result(p) && v.starts_with("file "), "{:?} is new or changed: {}", p, v);
        }
        for id in good {
            prop_assert_eq!(kit.active(&id).await, Some(1), "the good package {} was not installed", id);
        }
        Ok(())
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 32, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn hostile_names_on_a_stick_write_nothing_outside_its_folder_and_never_panic(
            entries in proptest::collection::vec(entry(), 1..8)
        ) {
            runtime().block_on(case(entries))?;
        }
    }
}
