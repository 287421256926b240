//! Finding the one event of a batch that makes a plugin fail, so the error
//! report (and the dead-letter queue) can name it rather than the batch.

use weir_core::ChangeEvent;

use crate::{PluginError, RouterPlugin, TransformPlugin};

/// The index of the event of `batch` that makes `plugin` fail (trap, time
/// out, exceed its memory, break the contract), with the error it fails
/// with, or `None` when the batch does not fail on a fresh instance.
///
/// Bisects on fresh instances: each probe runs a prefix of the batch, and
/// the prefix is halved toward the first failing one, so about
/// log2(batch length) instances are created. Probing prefixes (rather than
/// halves on their own) keeps the events before the culprit in front of it,
/// so an event that only fails after certain earlier ones is still found.
/// A probe that times out costs the full call timeout.
///
/// The event found is the last of the shortest failing prefix: it may be
/// the one the plugin fails on, or only the one that makes the call too
/// large for the deadline or the memory limit. Run it alone before blaming
/// it.
///
/// Errors creating an instance (a failing `init`) are returned as they are.
pub fn find_failing_event(
    plugin: &TransformPlugin,
    batch: &[ChangeEvent],
) -> Result<Option<(usize, PluginError)>, PluginError> {
    bisect(batch.len(), |len| {
        let mut instance = plugin.instantiate_probe()?;
        Ok(instance.process(&batch[..len]).err())
    })
}

/// [`find_failing_event`] for routers.
pub fn find_failing_route(
    plugin: &RouterPlugin,
    batch: &[ChangeEvent],
) -> Result<Option<(usize, PluginError)>, PluginError> {
    bisect(batch.len(), |len| {
        let mut instance = plugin.instantiate_probe()?;
        Ok(instance.route(&batch[..len]).err())
    })
}

/// The smallest `n` such that the first `n` events fail, minus one, with
/// the error of that run; `None` when all `len` events do not fail.
/// `fails(n)` runs the first `n` events and returns their error, if any.
fn bisect<E>(
    len: usize,
    mut fails: impl FnMut(usize) -> Result<Option<E>, PluginError>,
) -> Result<Option<(usize, E)>, PluginError> {
    if len == 0 {
        return Ok(None);
    }
    let Some(mut error) = fails(len)? else {
        return Ok(None);
    };
    // Invariant: the first `passing` events pass, the first `failing` fail
    // (with `error`).
    let (mut passing, mut failing) = (0, len);
    while failing - passing > 1 {
        let mid = passing + (failing - passing) / 2;
        match fails(mid)? {
            Some(e) => {
                failing = mid;
                error = e;
            }
            None => passing = mid,
        }
    }
    Ok(Some((failing - 1, error)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bisects_to_the_first_failing_event() {
        for len in 1..40 {
            for culprit in 0..len {
                let mut probes = 0;
                let found = bisect(len, |n| {
                    probes += 1;
                    Ok((n > culprit).then_some(n))
                })
                .unwrap();
                // The error is the one of the shortest failing run.
                assert_eq!(found, Some((culprit, culprit + 1)));
                assert!(
                    probes <= 2 + len.ilog2() as usize,
                    "{probes} probes for {len}"
                );
            }
        }
        assert_eq!(bisect(10, |_| Ok(None::<()>)).unwrap(), None);
        assert_eq!(
            bisect(0, |_| -> Result<Option<()>, _> { unreachable!() }).unwrap(),
            None
        );
    }
}
