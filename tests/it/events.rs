//! The typed event stream: the store's reader (replay, follow, trim), and the
//! node's hub (fan-out, replay then live, lag, shutdown, across nodes), on
//! real Redis servers.

use std::time::Duration;

use fred::prelude::*;
use taskherd::events::{Delivery, Hub, Subscription};
use taskherd::store::{Event, EventId, EventKind, Read, Store};
use taskherd::task::{NewTask, TaskStatus};
use taskherd::worker::Registry;

use crate::store_support::{claim_one, complete_ok, create, task_for};
use crate::support::{TestNode, TestRedis, all_events, node_config, raw::raw_redis};

const DEADLINE: Duration = Duration::from_secs(10);

fn owned(agent: &str, owner: &str) -> NewTask {
    NewTask {
        owner_id: Some(owner.to_string()),
        ..task_for(agent)
    }
}

/// The next event of `sub`, failing the test on anything else or after the
/// deadline.
async fn next_event(sub: &mut Subscription) -> Event {
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(Ok(Delivery::Event(e)))) => (*e).clone(),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// The next `n` events of `sub`.
async fn next_events(sub: &mut Subscription, n: usize) -> Vec<Event> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(next_event(sub).await);
    }
    out
}

/// The task ids of the next `n` events of `sub`.
async fn next_task_ids(sub: &mut Subscription, n: usize) -> Vec<String> {
    next_events(sub, n)
        .await
        .into_iter()
        .map(|e| e.task_id)
        .collect()
}

/// Waits until the hub has sent every event the stream holds.
async fn wait_until_sent(hub: &Hub, store: &Store) {
    let last = all_events(store).await.last().map(|e| e.id).unwrap();
    crate::support::wait_until("hub sent everything", DEADLINE, || {
        let p = hub.position();
        async move { (p >= last).then_some(()) }
    })
    .await;
}

/// Trims the stream to its newest `keep` entries, exactly (not `~`), as
/// retention would.
async fn trim_stream(store: &Store, keep: u64) {
    let raw = raw_redis(store.redis_url()).await;
    let _: u64 = raw
        .xtrim(store.keys().events(), ("MAXLEN", keep))
        .await
        .expect("XTRIM");
}

#[tokio::test]
async fn every_transition_is_a_typed_event_with_owner_type_and_ordered_ids() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let t = create(&store, owned("echo", "alice")).await;
    let c = claim_one(&store, "echo").await;
    complete_ok(&store, &c).await;
    let unowned = create(&store, task_for("echo")).await;
    store.cancel(&unowned.id, None).await.expect("cancel");

    let events = all_events(&store).await;
    let kinds: Vec<(EventKind, &str)> = events
        .iter()
        .map(|e| (e.kind, e.task_id.as_str()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EventKind::Created, t.id.as_str()),
            (EventKind::Started, t.id.as_str()),
            (EventKind::Completed, t.id.as_str()),
            (EventKind::Created, unowned.id.as_str()),
            (EventKind::Cancelled, unowned.id.as_str()),
        ]
    );
    for e in &events[..3] {
        assert_eq!(e.owner_id.as_deref(), Some("alice"), "{e:?}");
        assert_eq!(e.agent_id, "echo");
        assert_eq!(e.task_type, "summarise");
    }
    assert_eq!(events[1].attempt, Some(1));
    assert_eq!(events[1].worker_id.as_deref(), Some("w1"));
    assert_eq!(events[2].status, TaskStatus::Completed);
    assert!(events[2].duration_ms.is_some());
    assert_eq!(events[3].owner_id, None);
    assert_eq!(events[4].previous_status, Some(TaskStatus::Queued));
    assert!(events.windows(2).all(|w| w[0].id < w[1].id));
    for e in &events {
        assert_eq!(e.id.to_string().parse::<EventId>().unwrap(), e.id);
    }
    assert_eq!(store.last_event_id().await.unwrap(), events[4].id);
}

#[tokio::test]
async fn a_replay_pages_after_any_event_id_and_says_when_it_was_trimmed() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    assert_eq!(store.last_event_id().await.unwrap(), EventId::ZERO);
    let empty = store.replay_events(EventId::ZERO, 10).await.unwrap();
    assert!(empty.events.is_empty() && !empty.trimmed && !empty.more);

    for _ in 0..7 {
        create(&store, task_for("echo")).await;
    }
    let all = all_events(&store).await;
    assert_eq!(all.len(), 7);

    // Pages of 3 after the second event: 3, 2 (no more).
    let first = store.replay_events(all[1].id, 3).await.unwrap();
    assert_eq!(first.events, all[2..5].to_vec());
    assert!(first.more && !first.trimmed);
    let second = store.replay_events(all[4].id, 3).await.unwrap();
    assert_eq!(second.events, all[5..].to_vec());
    assert!(!second.more && !second.trimmed);

    // Retention drops the oldest four: an id older than the oldest entry
    // kept is reported trimmed (the stream cannot tell whether the one just
    // before it was the last one gone); one the stream still holds is not.
    trim_stream(&store, 3).await;
    let gone = store.replay_events(all[0].id, 10).await.unwrap();
    assert!(gone.trimmed, "after a trimmed id: {gone:?}");
    assert_eq!(gone.events, all[4..].to_vec(), "what is left, still given");
    assert!(store.replay_events(all[3].id, 10).await.unwrap().trimmed);
    let kept = store.replay_events(all[4].id, 10).await.unwrap();
    assert!(!kept.trimmed, "{kept:?}");
    assert_eq!(kept.events, all[5..].to_vec());
    let from_start = store.replay_events(EventId::ZERO, 10).await.unwrap();
    assert_eq!(from_start.events, all[4..].to_vec());

    // An id ahead of everything the stream ever held (another Redis, or one
    // that was emptied) is a reset, told the same way.
    let ahead = EventId {
        ms: all[6].id.ms + 60_000,
        ..all[6].id
    };
    assert!(store.replay_events(ahead, 10).await.unwrap().trimmed);
}

#[tokio::test]
async fn a_reader_follows_live_and_says_when_it_fell_behind_a_trim() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let seed = create(&store, task_for("echo")).await;
    let start = store.last_event_id().await.unwrap();
    let mut reader = store.event_reader(start).unwrap();
    reader.set_block(Duration::from_millis(200));

    let later = create(&store, task_for("echo")).await;
    let got = loop {
        match tokio::time::timeout(DEADLINE, reader.next()).await {
            Ok(Read::Events(e)) if !e.is_empty() => break e,
            Ok(Read::Events(_)) => continue,
            other => panic!("expected events, got {other:?}"),
        }
    };
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].task_id, later.id);
    assert_ne!(got[0].task_id, seed.id);
    assert_eq!(reader.position(), got[0].id);

    // Nothing new: an empty read after the block time, not an error.
    match tokio::time::timeout(DEADLINE, reader.next()).await {
        Ok(Read::Events(e)) => assert!(e.is_empty(), "{e:?}"),
        other => panic!("expected an empty read, got {other:?}"),
    }

    // A reader seeded before entries that were trimmed away is told so,
    // then goes on from the newest event.
    let behind = reader.position();
    for _ in 0..3 {
        create(&store, task_for("echo")).await;
    }
    trim_stream(&store, 1).await;
    let mut late = store.event_reader(behind).unwrap();
    late.set_block(Duration::from_millis(200));
    match tokio::time::timeout(DEADLINE, late.next()).await {
        Ok(Read::Trimmed {
            lost_after,
            resumed_after,
        }) => {
            assert_eq!(lost_after, behind);
            assert!(resumed_after > behind);
        }
        other => panic!("expected a trim, got {other:?}"),
    }
    let newest = create(&store, task_for("echo")).await;
    let after_trim = loop {
        match tokio::time::timeout(DEADLINE, late.next()).await {
            Ok(Read::Events(e)) if !e.is_empty() => break e,
            Ok(Read::Events(_)) => continue,
            other => panic!("expected events, got {other:?}"),
        }
    };
    assert_eq!(
        after_trim.iter().map(|e| &e.task_id).collect::<Vec<_>>(),
        vec![&newest.id]
    );
    reader.close().await;
    late.close().await;
}

#[tokio::test]
async fn a_reader_rides_out_a_redis_restart_without_losing_or_repeating() {
    let mut redis = TestRedis::start();
    let store = redis.store().await;
    let mut reader = store.event_reader(EventId::ZERO).unwrap();
    reader.set_block(Duration::from_millis(200));
    let first = create(&store, task_for("echo")).await;
    let mut seen: Vec<String> = Vec::new();
    while seen.is_empty() {
        if let Read::Events(e) = tokio::time::timeout(DEADLINE, reader.next()).await.unwrap() {
            seen.extend(e.into_iter().map(|e| e.task_id));
        }
    }

    // Restart (AOF replayed): the reader retries with backoff meanwhile.
    let read = tokio::spawn(async move {
        let mut more: Vec<String> = Vec::new();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while more.len() < 2 && tokio::time::Instant::now() < deadline {
            if let Read::Events(e) = reader.next().await {
                more.extend(e.into_iter().map(|e| e.task_id));
            }
        }
        reader.close().await;
        more
    });
    redis.restart();
    let mut created = Vec::new();
    for _ in 0..2 {
        let id = crate::support::wait_until("create after restart", DEADLINE, || {
            let store = store.clone();
            async move { store.create(task_for("echo")).await.ok() }
        })
        .await
        .task
        .id;
        created.push(id);
    }
    let more = read.await.unwrap();
    assert_eq!(seen, vec![first.id]);
    assert_eq!(more, created, "each event after the restart once, in order");
}

#[tokio::test]
async fn the_hub_fans_out_replays_then_goes_live_and_tells_a_slow_subscriber_it_lagged() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let before = create(&store, owned("echo", "alice")).await;
    let hub = Hub::start(&store, 4).await.unwrap();
    let start = hub.position();
    assert_eq!(start, store.last_event_id().await.unwrap());

    let mut live = hub.subscribe(None).await.unwrap();
    let mut other = hub.subscribe(None).await.unwrap();
    // From the stream's start: the event before the hub started, replayed.
    let mut replaying = hub.subscribe(Some(EventId::ZERO)).await.unwrap();
    let mut slow = hub.subscribe(None).await.unwrap();
    assert_eq!(hub.subscribers(), 4);

    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create(&store, task_for("echo")).await.id);
    }
    let got: Vec<String> = next_task_ids(&mut live, 3).await;
    assert_eq!(got, ids);
    let got: Vec<String> = next_task_ids(&mut other, 3).await;
    assert_eq!(got, ids, "every subscriber gets every event");
    let got: Vec<String> = next_task_ids(&mut replaying, 4).await;
    let mut expected = vec![before.id.clone()];
    expected.extend(ids.iter().cloned());
    assert_eq!(got, expected, "replay, then live, each once");

    // `slow` read nothing; five more overflow its buffer of four.
    for _ in 0..5 {
        ids.push(create(&store, task_for("echo")).await.id);
    }
    wait_until_sent(&hub, &store).await;
    match tokio::time::timeout(DEADLINE, slow.next()).await {
        Ok(Some(Ok(Delivery::Lagged { missed }))) => assert_eq!(missed, 4),
        other => panic!("expected a lag, got {other:?}"),
    }
    let rest: Vec<String> = next_task_ids(&mut slow, 4).await;
    assert_eq!(rest, ids[4..].to_vec(), "after the lag, the newest four");

    drop((live, other, replaying));
    assert_eq!(hub.subscribers(), 1);

    // Stopped: what was sent is delivered, then the subscription ends.
    let mut tail = hub.subscribe(None).await.unwrap();
    let a = create(&store, task_for("echo")).await.id;
    let b = create(&store, task_for("echo")).await.id;
    wait_until_sent(&hub, &store).await;
    hub.stop().await;
    let got: Vec<String> = next_task_ids(&mut tail, 2).await;
    assert_eq!(got, vec![a, b]);
    assert!(matches!(
        tokio::time::timeout(DEADLINE, tail.next()).await,
        Ok(None)
    ));
    // A subscription made after the stop ends at once, it does not hang.
    let mut late = hub.subscribe(None).await.unwrap();
    assert!(matches!(
        tokio::time::timeout(DEADLINE, late.next()).await,
        Ok(None)
    ));
}

#[tokio::test]
async fn a_subscriber_whose_start_was_trimmed_is_told_to_resync() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let mut old = Vec::new();
    for _ in 0..4 {
        old.push(create(&store, task_for("echo")).await);
    }
    let first = all_events(&store).await[0].id;
    trim_stream(&store, 1).await;
    let hub = Hub::start(&store, 64).await.unwrap();
    let mut sub = hub.subscribe(Some(first)).await.unwrap();
    match tokio::time::timeout(DEADLINE, sub.next()).await {
        Ok(Some(Ok(Delivery::Resync))) => {}
        other => panic!("expected a resync, got {other:?}"),
    }
    let fresh = create(&store, task_for("echo")).await;
    assert_eq!(next_event(&mut sub).await.task_id, fresh.id);
    hub.stop().await;
}

#[tokio::test]
async fn a_node_sees_what_happened_on_another_node() {
    let redis = TestRedis::start();
    let config = || node_config(&redis.url(), None, taskherd::clock::Clock::redis());
    let a = TestNode::start(config(), Registry::new()).await;
    let b = TestNode::start(config(), Registry::new()).await;
    let mut on_b = b.events.subscribe(None).await.unwrap();
    let t = create(&a.store, owned("echo", "alice")).await;
    let c = claim_one(&a.store, "echo").await;
    complete_ok(&a.store, &c).await;
    let seen = next_events(&mut on_b, 3).await;
    assert_eq!(
        seen.iter().map(|e| e.kind).collect::<Vec<_>>(),
        vec![EventKind::Created, EventKind::Started, EventKind::Completed]
    );
    assert!(seen.iter().all(|e| e.task_id == t.id));
    assert!(seen.iter().all(|e| e.owner_id.as_deref() == Some("alice")));
    a.stop().await;
    b.stop().await;
    // The node's shutdown stopped its hub: the subscription has ended.
    assert!(matches!(
        tokio::time::timeout(DEADLINE, on_b.next()).await,
        Ok(None)
    ));
}

#[tokio::test]
async fn the_hub_reads_nothing_while_nobody_subscribes() {
    let redis = TestRedis::start();
    let store = redis.store().await;
    let hub = Hub::start(&store, 64).await.unwrap();
    crate::support::wait_until("the hub pauses", DEADLINE, || {
        let reading = hub.is_reading();
        async move { (!reading).then_some(()) }
    })
    .await;
    let raw = raw_redis(store.redis_url()).await;
    let _: () = raw.config_resetstat().await.unwrap();
    for _ in 0..3 {
        create(&store, task_for("echo")).await;
    }
    let info: String = raw
        .info(Some(fred::types::InfoKind::CommandStats))
        .await
        .unwrap();
    assert!(
        !info.contains("cmdstat_xread:"),
        "a paused hub read: {info}"
    );

    // The first subscriber resumes it from the newest event: what happened
    // while nobody listened is not delivered as live.
    let mut sub = hub.subscribe(None).await.unwrap();
    assert!(hub.is_reading());
    let next = create(&store, task_for("echo")).await;
    assert_eq!(next_event(&mut sub).await.task_id, next.id);
    drop(sub);
    crate::support::wait_until("the hub pauses again", DEADLINE, || {
        let reading = hub.is_reading();
        async move { (!reading).then_some(()) }
    })
    .await;
    hub.stop().await;
}
