//! Results a WASI 0.3 guest is handed as streams (a query's rows, a
//! store's keys) and has not read yet, and the arguments of its calls still
//! running.
//!
//! The host reads such a result whole, then streams it to the guest: until
//! the guest reads it, it is host memory, which the guest's own memory
//! limit does not count. A guest that asks again and again without reading
//! would hold as much of the host as it likes; so a store's unread results
//! are bounded. While it has [`MAX_UNREAD_BYTES`] unread, a call that would
//! stream more is refused (one result, however large within its own caps,
//! is always handed over when nothing else is unread). A result counts
//! until the guest has read all of it or dropped its stream.
//!
//! A WASI 0.3 guest may also start any number of calls at once: each
//! call's arguments (a statement and its parameters, a key and its value)
//! are copied into host memory as it starts, and held while it waits for a
//! connection. They count against a bound of the same size, their own
//! (so a call running does not take a large result's room to be alone),
//! until the call ends ([`Unread::hold`]): a call past it is refused
//! before it waits.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};

use wasmtime::StoreContextMut;
use wasmtime::component::{Destination, StreamProducer, StreamResult, VecBuffer};

/// What a store may hold unread before a call that would stream more is
/// refused: four results at the default `sql.max_result_bytes`, or one
/// listing of a store's keys.
pub const MAX_UNREAD_BYTES: usize = 64 << 20;

/// A store's unread bytes, shared by the capabilities that stream, and
/// the bytes its running calls' arguments hold.
#[derive(Clone, Default)]
pub struct Unread {
    results: Arc<AtomicUsize>,
    arguments: Arc<AtomicUsize>,
}

impl Unread {
    /// `items` as a stream producer counting `bytes` until it is read or
    /// dropped; or why not, when too much is unread already.
    pub fn stream<T>(&self, items: Vec<T>, bytes: usize) -> Result<Metered<T>, String> {
        let mut reserved = self.reserve();
        reserved.grow(bytes)?;
        Ok(reserved.stream(items))
    }

    /// A result read in parts (a store's keys, page by page), counted as
    /// unread as each part arrives: calls reading at the same time see
    /// each other's, and are refused as they cross the bound together
    /// rather than after each has read it all.
    pub fn reserve(&self) -> Reserved {
        Reserved(Held {
            unread: self.results.clone(),
            bytes: 0,
            arguments: false,
        })
    }

    /// `bytes` of a call's arguments counted while the returned hold
    /// lives (the call runs); or why not.
    pub fn hold(&self, bytes: usize) -> Result<Reserved, String> {
        let mut reserved = Reserved(Held {
            unread: self.arguments.clone(),
            bytes: 0,
            arguments: true,
        });
        reserved.grow(bytes)?;
        Ok(reserved)
    }

    /// Bytes unread now.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.results.load(Ordering::Relaxed)
    }

    /// Bytes running calls hold now.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.arguments.load(Ordering::Relaxed)
    }
}

/// Bytes of a result being read, counted as unread until dropped or
/// handed over as its stream.
pub struct Reserved(Held);

impl Reserved {
    /// Counts `bytes` more; or why not, when what others hold unread
    /// leaves no room. Nothing more always fits (a result may be past the
    /// bound alone, and an empty stream must still be had beside it).
    pub fn grow(&mut self, bytes: usize) -> Result<(), String> {
        if bytes == 0 {
            return Ok(());
        }
        let held = &mut self.0;
        let mut unread = held.unread.load(Ordering::Relaxed);
        loop {
            let others = unread.saturating_sub(held.bytes);
            if others > 0 && unread.saturating_add(bytes) > MAX_UNREAD_BYTES {
                return Err(if held.arguments {
                    format!(
                        "{} MiB of arguments are held by calls still running; wait for \
                         those calls before starting more",
                        others >> 20
                    )
                } else {
                    format!(
                        "{} MiB of earlier results are still unread; read or drop their \
                         streams before asking for more",
                        others >> 20
                    )
                });
            }
            match held.unread.compare_exchange_weak(
                unread,
                unread.saturating_add(bytes),
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => unread = now,
            }
        }
        held.bytes += bytes;
        Ok(())
    }

    /// `items` as a stream producer, still counted until read or dropped.
    pub fn stream<T>(self, items: Vec<T>) -> Metered<T> {
        Metered {
            items: items.into(),
            _held: self.0,
        }
    }
}

/// Bytes counted as unread until dropped.
struct Held {
    unread: Arc<AtomicUsize>,
    bytes: usize,
    /// Counts a running call's arguments, not a result.
    arguments: bool,
}

impl Drop for Held {
    fn drop(&mut self) {
        self.unread.fetch_sub(self.bytes, Ordering::Relaxed);
    }
}

/// A stream's items, handed over as the guest reads them (no more at once
/// than its read asks for), counted as unread until the last is read or
/// the stream is dropped.
pub struct Metered<T> {
    items: VecDeque<T>,
    _held: Held,
}

impl<T, D> StreamProducer<D> for Metered<T>
where
    T: Unpin + Send + Sync + 'static,
{
    type Item = T;
    type Buffer = VecBuffer<T>;

    fn poll_produce<'a>(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        store: StoreContextMut<'a, D>,
        mut destination: Destination<'a, Self::Item, Self::Buffer>,
        _: bool,
    ) -> Poll<wasmtime::Result<StreamResult>> {
        let this = self.get_mut();
        let wanted = destination.remaining(store).unwrap_or(usize::MAX);
        let count = wanted.min(this.items.len());
        if count > 0 {
            let chunk: Vec<T> = this.items.drain(..count).collect();
            destination.set_buffer(chunk.into());
        }
        // Once the last is handed over, the producer is dropped and its
        // bytes with it.
        Poll::Ready(Ok(if this.items.is_empty() {
            StreamResult::Dropped
        } else {
            // A zero-length read: the rest is ready whenever it is read.
            StreamResult::Completed
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_holds_one_result_of_any_size_and_more_up_to_the_bound() {
        let unread = Unread::default();
        let big = unread.stream(vec![0u8], MAX_UNREAD_BYTES * 2).unwrap();
        assert!(unread.stream(vec![0u8], 1).is_err());
        // An empty stream is always had (a failed call answers with one).
        assert!(unread.stream(Vec::<u8>::new(), 0).is_ok());
        drop(big);
        assert_eq!(unread.bytes(), 0);
        let held: Vec<_> = (0..4)
            .map(|_| unread.stream(vec![0u8], MAX_UNREAD_BYTES / 4).unwrap())
            .collect();
        let refused = unread.stream(vec![0u8], 1).err().unwrap();
        assert!(refused.contains("64 MiB"), "{refused}");
        drop(held);
        assert_eq!(unread.bytes(), 0);
        assert!(unread.stream(vec![0u8], 1).is_ok());
    }

    #[test]
    fn calls_running_hold_their_arguments_against_the_bound() {
        let unread = Unread::default();
        let running: Vec<_> = (0..4)
            .map(|_| unread.hold(MAX_UNREAD_BYTES / 4).unwrap())
            .collect();
        assert!(unread.hold(1).is_err(), "no room for another call");
        // Results are counted apart: a large one is still had alone.
        let big = unread.stream(vec![0u8], MAX_UNREAD_BYTES * 2);
        assert!(big.is_ok(), "a result alone, whatever calls run");
        drop(big);
        drop(running);
        assert_eq!(unread.held(), 0);
        // A call alone is let through whatever it holds.
        let alone = unread.hold(MAX_UNREAD_BYTES * 2).unwrap();
        assert!(unread.hold(1).is_err());
        drop(alone);
        assert!(unread.hold(1).is_ok());
    }

    #[test]
    fn results_read_at_the_same_time_count_as_they_arrive() {
        let unread = Unread::default();
        let (mut first, mut second) = (unread.reserve(), unread.reserve());
        first.grow(MAX_UNREAD_BYTES / 2).unwrap();
        second.grow(MAX_UNREAD_BYTES / 4).unwrap();
        // The second's next page would cross the bound with the first's.
        let refused = second.grow(MAX_UNREAD_BYTES / 2).unwrap_err();
        assert!(refused.contains("32 MiB"), "{refused}");
        drop(second);
        // Alone, one result grows as it must.
        first.grow(MAX_UNREAD_BYTES).unwrap();
        let stream = first.stream(vec![0u8]);
        assert_eq!(unread.bytes(), MAX_UNREAD_BYTES * 3 / 2);
        drop(stream);
        assert_eq!(unread.bytes(), 0);
    }
}
