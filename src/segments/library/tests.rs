//! Two imports of one segment racing (a cloud load, a USB stick, the CLI): the rollback guard holds
//! in every interleaving.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};

use super::{Import, Installed, Source};
use crate::segments::testkit::Kit;
use crate::segments::{Limits, Rejection, Threat};

/// Rounds per interleaving.
const ROUNDS: usize = 4;

/// Per held version: told when its import arrives, and the permit that lets it go on.
type Held = HashMap<u64, (Arc<Notify>, Arc<Semaphore>)>;

/// Holds the imports of the listed versions after their checks, until released.
#[derive(Clone, Default)]
struct Gate {
    held: Arc<Held>,
}

impl Gate {
    fn holding(versions: &[u64]) -> Gate {
        let held = versions.iter().map(|v| (*v, (Arc::new(Notify::new()), Arc::new(Semaphore::new(0))))).collect();
        Gate { held: Arc::new(held) }
    }

    async fn arrived(&self, v: u64) {
        self.held[&v].0.notified().await;
    }

    fn release(&self, v: u64) {
        self.held[&v].1.add_permits(1);
    }
}

#[derive(Debug, Clone, Copy)]
enum Order {
    /// v3 passes its checks, then v5 is imported whole, then v3 goes on.
    V3CheckedThenV5,
    /// v5 passes its checks, then v3 is imported whole, then v5 goes on.
    V5CheckedThenV3,
    /// Both pass their checks, then both go on at once.
    BothChecked,
    /// No gate at all.
    Free,
}

async fn import(kit: &Kit, lib: &super::Library, version: u64) -> Result<Installed, Rejection> {
    let file = kit.dir.path().join(format!("race-{version}.vseg"));
    let how = Import {
        trust: &kit.trust,
        device_id: "vs-race",
        now: jiff::Timestamp::now(),
        limits: Limits::default(),
        allow_downgrade: false,
        activate: true,
        source: if version == 5 { Source::Cloud } else { Source::Usb("stick/v3.vseg".into()) },
    };
    lib.import_file(&file, how, |_| {}).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_imports_cannot_roll_a_segment_back() {
    for order in [Order::V3CheckedThenV5, Order::V5CheckedThenV3, Order::BothChecked, Order::Free] {
        for round in 0..ROUNDS {
            let kit = Kit::new().await;
            for v in [1, 3, 5] {
                kit.package("race", v, &kit.dir.path().join(format!("race-{v}.vseg")));
            }
            import(&kit, &kit.library, 1).await.expect("v1 installs");
            let gate = match order {
                Order::V3CheckedThenV5 => Gate::holding(&[3]),
                Order::V5CheckedThenV3 => Gate::holding(&[5]),
                Order::BothChecked => Gate::holding(&[3, 5]),
                Order::Free => Gate::default(),
            };
            let mut lib = kit.library.clone();
            let g = gate.clone();
            lib.set_before_install(Arc::new(move |v| {
                let g = g.clone();
                Box::pin(async move {
                    if let Some((arrived, release)) = g.held.get(&v) {
                        arrived.notify_one();
                        release.acquire().await.expect("the gate stays open").forget();
                    }
                })
            }));
            let (r3, r5) = match order {
                Order::V3CheckedThenV5 => {
                    let lib2 = lib.clone();
                    tokio::join!(import(&kit, &lib, 3), async {
                        gate.arrived(3).await;
                        let r = import(&kit, &lib2, 5).await;
                        gate.release(3);
                        r
                    })
                }
                Order::V5CheckedThenV3 => {
                    let lib2 = lib.clone();
                    let (r5, r3) = tokio::join!(import(&kit, &lib, 5), async {
                        gate.arrived(5).await;
                        let r = import(&kit, &lib2, 3).await;
                        gate.release(5);
                        r
                    });
                    (r3, r5)
                }
                Order::BothChecked => {
                    let (r3, r5, ()) = tokio::join!(import(&kit, &lib, 3), import(&kit, &lib, 5), async {
                        gate.arrived(3).await;
                        gate.arrived(5).await;
                        gate.release(3);
                        gate.release(5);
                    });
                    (r3, r5)
                }
                Order::Free => tokio::join!(import(&kit, &lib, 3), import(&kit, &lib, 5)),
            };
            let ctx = format!("{order:?}, round {round}: v3 {r3:?}, v5 {r5:?}");
            assert!(r5.is_ok(), "v5 must install: {ctx}");
            assert_eq!(kit.active("race").await, Some(5), "the active version after both: {ctx}");
            match order {
                // v5 was in before v3's install: v3 is a rollback.
                Order::V3CheckedThenV5 => {
                    assert_eq!(r3.as_ref().map_err(|e| e.threat), Err(Threat::Rollback), "{ctx}")
                }
                // v3 was in before v5 was installed: both are fine.
                Order::V5CheckedThenV3 => assert!(r3.is_ok(), "{ctx}"),
                // Either went first: v3 is refused, or it was installed before v5.
                Order::BothChecked | Order::Free => {
                    assert!(r3.is_ok() || matches!(&r3, Err(e) if e.threat == Threat::Rollback), "{ctx}")
                }
            }
        }
    }
}
