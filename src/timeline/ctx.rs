//! What the daemon lends the timeline layer for one call: the configuration, the store and the
//! media environment. The director, pre-flight and the scheduler all take it.

use crate::config::Config;
use crate::media::MediaEnv;
use crate::store::Store;

/// What the daemon lends the director (and pre-flight) for a call.
pub struct Ctx<'a> {
    pub cfg: &'a Config,
    pub store: &'a Store,
    pub env: &'a MediaEnv,
}
