//! Router plugins: where each change goes.

use std::sync::Arc;

use weir_core::{ChangeEvent, Destination};

use crate::bindings::router;
use crate::convert::lift_destination;
use crate::session::{Loaded, Session};
use crate::{PluginEngine, PluginError, PluginSpec};

/// A compiled router component, validated against the `router` world.
/// Cheap to clone.
#[derive(Clone)]
pub struct RouterPlugin {
    loaded: Arc<Loaded<router::Router>>,
}

crate::session::plugin_handle!(RouterPlugin, RouterInstance, "router");

/// A live router instance; see [`TransformInstance`](crate::TransformInstance)
/// for how instances behave.
pub struct RouterInstance {
    session: Session<router::Router>,
}

impl RouterInstance {
    /// The destinations of each event of `batch`, in order. An empty list
    /// delivers the event nowhere.
    pub fn route(&mut self, batch: &[ChangeEvent]) -> Result<Vec<Vec<Destination>>, PluginError> {
        self.session.check_usable()?;
        let mut routes = Vec::with_capacity(batch.len());
        let mut start = 0;
        while start < batch.len() {
            let end = self.session.prepare_segment(batch, start)?;
            let segment = &batch[start..end];
            let answers = self
                .session
                .call_batch(segment, |exports, store, changes| {
                    exports.call_route(store, changes)
                })?;
            if answers.len() != segment.len() {
                return Err(self.session.count_error(
                    "destination lists",
                    answers.len(),
                    segment.len(),
                ));
            }
            routes.extend(
                answers
                    .into_iter()
                    .map(|ds| ds.into_iter().map(lift_destination).collect()),
            );
            start = end;
        }
        self.session.calls_succeeded();
        Ok(routes)
    }

    /// Whether an earlier call failed, so this instance refuses calls.
    pub fn is_poisoned(&self) -> bool {
        self.session.is_poisoned()
    }

    /// The plugin's name.
    pub fn name(&self) -> &str {
        &self.session.name
    }
}
