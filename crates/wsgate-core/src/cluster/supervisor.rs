//! The fleet's background task: connect (bounded), subscribe to the event channel, load the
//! fleet's revocations and hand it ours, re-register our subject slots and write our whole
//! session listing, then renew the lease every `lease / 3`, free released slots and write the
//! sessions that started or ended as they do. Any failure drops the connection; the next
//! attempt follows a backoff that doubles up to `lease`.

use std::collections::HashSet;
use std::time::{Duration, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::AsyncConnectionConfig;
use tracing::{debug, warn};

use super::{BULK_TIMEOUT, Fleet, SUBJECT_HORIZON, lock, ms};

/// A connection (TCP, TLS, the Redis hello) must be set up within this.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const FIRST_BACKOFF: Duration = Duration::from_millis(100);

pub(super) async fn run(fleet: std::sync::Arc<Fleet>) {
    let mut backoff = FIRST_BACKOFF;
    loop {
        let was_up = tokio::select! {
            () = fleet.stop.cancelled() => return,
            was_up = connected(&fleet) => was_up,
        };
        lock(&fleet.connection).take();
        fleet.set_up(false, &"the connection ended");
        if !fleet
            .settled
            .swap(true, std::sync::atomic::Ordering::Relaxed)
        {
            // The one line for the state at start (Redis never answered, so no change).
            warn!(redis = %fleet.config.redis.display(), "fleet state: Redis unavailable at start; retrying");
        }
        if was_up {
            backoff = FIRST_BACKOFF;
        }
        tokio::select! {
            () = fleet.stop.cancelled() => return,
            () = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(fleet.config.lease);
    }
}

/// One connection's life; returns whether Redis answered (so the backoff starts over).
async fn connected(fleet: &Fleet) -> bool {
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        // Each call has its own bound (`Fleet::call`); this one only catches what they miss.
        .set_response_timeout(Some(BULK_TIMEOUT));
    let connecting = async {
        let connection = fleet
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await?;
        let mut pubsub = fleet.client.get_async_pubsub().await?;
        pubsub.subscribe(fleet.channel()).await?;
        Ok::<_, redis::RedisError>((connection, pubsub))
    };
    let (connection, pubsub) = match tokio::time::timeout(CONNECT_TIMEOUT, connecting).await {
        Ok(Ok(connected)) => connected,
        Ok(Err(error)) => {
            debug!(%error, "fleet state: cannot connect to Redis");
            fleet.metrics.cluster_error("connect");
            return false;
        }
        Err(_) => {
            debug!("fleet state: Redis did not answer the connection in time");
            fleet.metrics.cluster_error("connect");
            return false;
        }
    };
    *lock(&fleet.connection) = Some(connection);
    // Subscribed first, then loaded: no revocation falls between the two.
    if !sync(fleet).await {
        return false;
    }
    fleet.set_up(true, &"");
    fleet
        .settled
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let mut messages = pubsub.into_on_message();
    let mut every = tokio::time::interval(fleet.config.lease / 3);
    loop {
        // Registered before the checks below, so a wake-up between them is not lost.
        let woken = fleet.wake.notified();
        let touched = fleet.registry.sessions.changed().notified();
        if lock(&fleet.connection).is_none() {
            return true;
        }
        if !lock(&fleet.released).is_empty() && !flush_released(fleet).await {
            return true;
        }
        if !publish_touched(fleet).await {
            return true;
        }
        tokio::select! {
            _ = every.tick() => {
                if !renew(fleet).await {
                    return true;
                }
            }
            message = messages.next() => match message {
                Some(message) => fleet.apply(message.get_payload_bytes()),
                None => {
                    fleet.trouble("subscribe", &"the subscription ended");
                    return true;
                }
            },
            () = woken => {}
            () = touched => {}
        }
    }
}

/// Loads the fleet's revocations into ours, hands it ours (a Redis that came back empty
/// learns them again; one made here during an outage is announced now), re-registers the
/// subject slots we hold, and renews the lease. False when a call failed.
async fn sync(fleet: &Fleet) -> bool {
    let mut invocation = fleet.scripts.revocations.prepare_invoke();
    invocation.key(fleet.key("revocations"));
    let Some(known) = fleet
        .call_within("load", BULK_TIMEOUT, |mut c| async move {
            invocation.invoke_async::<Vec<(String, f64)>>(&mut c).await
        })
        .await
    else {
        return false;
    };
    for (member, until) in &known {
        let Some((claim, value)) = member.split_once(':') else {
            continue;
        };
        if let Some(kind) = crate::registry::Kind::from_claim(claim) {
            let until = UNIX_EPOCH + Duration::from_millis(until.max(0.0) as u64);
            fleet.registry.mirror(kind, value, until);
        }
    }
    for revocation in fleet.registry.revocations.list() {
        let (kind, value, until) = (revocation.kind, revocation.value, revocation.until);
        if !fleet.push_revocation(kind, &value, until, false).await {
            return false;
        }
    }
    let held: Vec<(String, String)> = lock(&fleet.held)
        .iter()
        .map(|(slot, key)| (slot.clone(), key.clone()))
        .collect();
    if !held.is_empty() {
        let mut pipe = redis::pipe();
        for (slot, key) in &held {
            pipe.hset(key, slot, &fleet.config.instance).ignore();
            pipe.pexpire(key, i64::try_from(ms(SUBJECT_HORIZON)).unwrap_or(i64::MAX))
                .ignore();
        }
        let registered = fleet
            .call_within("sync", BULK_TIMEOUT, |mut c| async move {
                pipe.query_async::<()>(&mut c).await
            })
            .await;
        if registered.is_none() {
            return false;
        }
    }
    flush_released(fleet).await && publish_all(fleet).await && renew(fleet).await
}

/// Removes the slots freed since the last flush; on failure they wait for the next one.
pub(super) async fn flush_released(fleet: &Fleet) -> bool {
    let released = std::mem::take(&mut *lock(&fleet.released));
    if released.is_empty() {
        return true;
    }
    let mut pipe = redis::pipe();
    for (key, slot) in &released {
        pipe.hdel(key, slot).ignore();
    }
    let done = fleet
        .call_within("release", BULK_TIMEOUT, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .is_some();
    if !done {
        lock(&fleet.released).extend(released);
    }
    done
}

fn sessions_key(fleet: &Fleet) -> String {
    fleet.key(&format!("sessions:{}", fleet.config.instance))
}

/// Writes this instance's whole listing (after a (re)connect: Redis may have lost it).
async fn publish_all(fleet: &Fleet) -> bool {
    let key = sessions_key(fleet);
    let touched = fleet.registry.sessions.take_dirty();
    let entries: Vec<(String, String)> = fleet
        .registry
        .sessions
        .list(None, None)
        .iter()
        .map(|s| (s.id.to_string(), s.to_json().to_string()))
        .collect();
    let mut pipe = redis::pipe();
    pipe.atomic().del(&key).ignore();
    if !entries.is_empty() {
        pipe.hset_multiple(&key, &entries).ignore();
        pipe.pexpire(
            &key,
            i64::try_from(ms(fleet.config.lease)).unwrap_or(i64::MAX),
        )
        .ignore();
    }
    publish(fleet, pipe, touched).await
}

/// Writes the sessions that started, ended or refreshed since the last publish: one
/// pipeline for all of them, however many piled up meanwhile.
async fn publish_touched(fleet: &Fleet) -> bool {
    let touched = fleet.registry.sessions.take_dirty();
    if touched.is_empty() {
        return true;
    }
    let key = sessions_key(fleet);
    let mut pipe = redis::pipe();
    for id in &touched {
        match fleet.registry.sessions.get(*id) {
            Some(session) => pipe.hset(&key, id, session.to_json().to_string()).ignore(),
            None => pipe.hdel(&key, id).ignore(),
        };
    }
    pipe.pexpire(
        &key,
        i64::try_from(ms(fleet.config.lease)).unwrap_or(i64::MAX),
    )
    .ignore();
    publish(fleet, pipe, touched).await
}

/// Runs a listing pipeline; on failure the touched ids wait for the next connection's full
/// publish.
async fn publish(fleet: &Fleet, pipe: redis::Pipeline, touched: HashSet<u64>) -> bool {
    let published = fleet
        .call_within("publish", BULK_TIMEOUT, |mut c| async move {
            pipe.query_async::<()>(&mut c).await
        })
        .await
        .is_some();
    if !published {
        for id in touched {
            fleet.registry.sessions.touch(id);
        }
    }
    published
}

/// Renews the lease (and the listing's expiry), counts live instances.
async fn renew(fleet: &Fleet) -> bool {
    let sessions_key = sessions_key(fleet);
    let mut invocation = fleet.scripts.renew.prepare_invoke();
    invocation
        .key(fleet.key("instances"))
        .key(sessions_key)
        .arg(&fleet.config.instance)
        .arg(ms(fleet.config.lease));
    match fleet
        .call("renew", |mut c| async move {
            invocation.invoke_async::<i64>(&mut c).await
        })
        .await
    {
        Some(instances) => {
            fleet.metrics.set_cluster_instances(instances);
            true
        }
        None => false,
    }
}
