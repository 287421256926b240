//! WASI's blocking calls, bounded by the plugin call's deadline.
//!
//! The epoch deadline interrupts WebAssembly code only: a plugin waiting
//! inside a host function (`std::thread::sleep`, which becomes
//! `wasi:io/poll.poll` on a clock pollable; a blocking read of a socket)
//! runs no WebAssembly code, so the epoch never gets the chance to stop
//! it. These implementations of `wasi:io/poll` and `wasi:io/streams`
//! replace the ones `wasmtime_wasi::p2::add_to_linker_sync` links: the
//! non-blocking functions are the same, and every wait ends at the call's
//! deadline with the trap an epoch deadline raises ([`Trap::Interrupt`]),
//! so such a call fails as a looping one does, as
//! [`PluginError::Timeout`](crate::PluginError::Timeout).

use std::future::Future;
use std::time::Instant;

use wasmtime::Trap;
use wasmtime::component::{HasData, Linker, Resource, ResourceTable};
use wasmtime_wasi::p2::bindings::io::{poll as async_poll, streams as async_streams};
use wasmtime_wasi::p2::bindings::sync::io::{poll, streams};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, DynPollable, StreamError, StreamResult};
use wasmtime_wasi::runtime::in_tokio;

use crate::state::HostState;

/// Links the deadline-bounded `wasi:io/poll` and `wasi:io/streams` over the
/// ones already in `linker`.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    linker.allow_shadowing(true);
    poll::add_to_linker::<HostState, Bounded>(linker, BoundedIo::of)?;
    streams::add_to_linker::<HostState, Bounded>(linker, BoundedIo::of)?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The `HasData` of [`BoundedIo`].
struct Bounded;

impl HasData for Bounded {
    type Data<'a> = BoundedIo<'a>;
}

/// A store's resources and the deadline of the call in progress.
struct BoundedIo<'a> {
    table: &'a mut ResourceTable,
    deadline: Option<Instant>,
}

impl BoundedIo<'_> {
    fn of(state: &mut HostState) -> BoundedIo<'_> {
        let deadline = state.deadline;
        BoundedIo {
            table: state.table(),
            deadline,
        }
    }
}

/// Runs `wait` to completion or until `deadline`, whichever comes first.
fn until<F: Future>(deadline: Option<Instant>, wait: F) -> wasmtime::Result<F::Output> {
    let Some(deadline) = deadline else {
        return Ok(in_tokio(wait));
    };
    let left = deadline.saturating_duration_since(Instant::now());
    // `timeout` polls `wait` before looking at the clock: what is ready
    // already is returned even when no time is left.
    in_tokio(async move { tokio::time::timeout(left, wait).await }).map_err(|_| {
        tracing::debug!("a plugin's blocking WASI call reached the call's deadline");
        wasmtime::Error::from(Trap::Interrupt)
    })
}

/// As [`until`], for calls whose errors are stream errors.
fn stream_until<T, F>(deadline: Option<Instant>, wait: F) -> StreamResult<T>
where
    F: Future<Output = StreamResult<T>>,
{
    until(deadline, wait).map_err(StreamError::Trap)?
}

impl poll::Host for BoundedIo<'_> {
    fn poll(&mut self, pollables: Vec<Resource<DynPollable>>) -> wasmtime::Result<Vec<u32>> {
        until(
            self.deadline,
            async_poll::Host::poll(&mut *self.table, pollables),
        )?
    }
}

impl poll::HostPollable for BoundedIo<'_> {
    fn ready(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<bool> {
        poll::HostPollable::ready(&mut *self.table, pollable)
    }

    fn block(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        until(
            self.deadline,
            async_poll::HostPollable::block(&mut *self.table, pollable),
        )?
    }

    fn drop(&mut self, pollable: Resource<DynPollable>) -> wasmtime::Result<()> {
        poll::HostPollable::drop(&mut *self.table, pollable)
    }
}

impl streams::Host for BoundedIo<'_> {
    fn convert_stream_error(&mut self, err: StreamError) -> wasmtime::Result<streams::StreamError> {
        streams::Host::convert_stream_error(&mut *self.table, err)
    }
}

impl streams::HostInputStream for BoundedIo<'_> {
    // Dropping a stream waits for its background work to stop (a socket's
    // pending write, say): bounded like every other wait.
    fn drop(&mut self, stream: Resource<DynInputStream>) -> wasmtime::Result<()> {
        until(
            self.deadline,
            async_streams::HostInputStream::drop(&mut *self.table, stream),
        )?
    }

    fn read(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<Vec<u8>> {
        streams::HostInputStream::read(&mut *self.table, stream, len)
    }

    fn blocking_read(
        &mut self,
        stream: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<Vec<u8>> {
        stream_until(
            self.deadline,
            async_streams::HostInputStream::blocking_read(&mut *self.table, stream, len),
        )
    }

    fn skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        streams::HostInputStream::skip(&mut *self.table, stream, len)
    }

    fn blocking_skip(&mut self, stream: Resource<DynInputStream>, len: u64) -> StreamResult<u64> {
        stream_until(
            self.deadline,
            async_streams::HostInputStream::blocking_skip(&mut *self.table, stream, len),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynInputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostInputStream::subscribe(&mut *self.table, stream)
    }
}

impl streams::HostOutputStream for BoundedIo<'_> {
    // A TCP writer's drop waits for the write in flight, which a peer that
    // never reads holds up for ever.
    fn drop(&mut self, stream: Resource<DynOutputStream>) -> wasmtime::Result<()> {
        until(
            self.deadline,
            async_streams::HostOutputStream::drop(&mut *self.table, stream),
        )?
    }

    fn check_write(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<u64> {
        streams::HostOutputStream::check_write(&mut *self.table, stream)
    }

    fn write(&mut self, stream: Resource<DynOutputStream>, bytes: Vec<u8>) -> StreamResult<()> {
        streams::HostOutputStream::write(&mut *self.table, stream, bytes)
    }

    fn blocking_write_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        bytes: Vec<u8>,
    ) -> StreamResult<()> {
        stream_until(
            self.deadline,
            async_streams::HostOutputStream::blocking_write_and_flush(
                &mut *self.table,
                stream,
                bytes,
            ),
        )
    }

    fn blocking_write_zeroes_and_flush(
        &mut self,
        stream: Resource<DynOutputStream>,
        len: u64,
    ) -> StreamResult<()> {
        stream_until(
            self.deadline,
            async_streams::HostOutputStream::blocking_write_zeroes_and_flush(
                &mut *self.table,
                stream,
                len,
            ),
        )
    }

    fn subscribe(
        &mut self,
        stream: Resource<DynOutputStream>,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        streams::HostOutputStream::subscribe(&mut *self.table, stream)
    }

    fn write_zeroes(&mut self, stream: Resource<DynOutputStream>, len: u64) -> StreamResult<()> {
        streams::HostOutputStream::write_zeroes(&mut *self.table, stream, len)
    }

    fn flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        streams::HostOutputStream::flush(&mut *self.table, stream)
    }

    fn blocking_flush(&mut self, stream: Resource<DynOutputStream>) -> StreamResult<()> {
        stream_until(
            self.deadline,
            async_streams::HostOutputStream::blocking_flush(&mut *self.table, stream),
        )
    }

    fn splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        streams::HostOutputStream::splice(&mut *self.table, dst, src, len)
    }

    fn blocking_splice(
        &mut self,
        dst: Resource<DynOutputStream>,
        src: Resource<DynInputStream>,
        len: u64,
    ) -> StreamResult<u64> {
        stream_until(
            self.deadline,
            async_streams::HostOutputStream::blocking_splice(&mut *self.table, dst, src, len),
        )
    }
}
