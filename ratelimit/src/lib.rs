//! The limiter: exact sliding windows (and the approximate and fixed ones) over the memory or
//! the Redis store, the policy xds-server streams, and the RLS answer. ratelimit-service serves
//! it over gRPC; authz-service links it to answer the limits it is given inside the ext_authz
//! call (`rate_limits.counted_by: authz-service`), with the same keys, so both agree on Redis.
//!
//! Layers, inner to outer: [`limiter`] (the algorithms, pure), [`store`] (where counters live:
//! memory or Redis, behind [`store::CounterStore`]), [`policy`] (limits from xds-server and the
//! descriptor protocol) and [`service`] (one request: cache, store, deadline, answer).

pub mod cache;
pub mod limiter;
pub mod metrics;
pub mod policy;
pub mod service;
pub mod store;
pub mod throttle;
