//! Idempotent producer state and acknowledged records across restarts and kill -9.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idempotent_sequences_survive_restart() {
    if skip_if_external("idempotent_sequences_survive_restart") {
        return;
    }
    let dir = TempDir::new();
    let t = unique("kidem");
    let pid;
    {
        let broker = Broker::private_on(dir.path(), &[]);
        let mut c = Client::connect(&broker).await;
        c.create_topic(&t, 1, &[]).await;
        let r: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1)
                    .with_transaction_timeout_ms(60000),
            )
            .await;
        assert_eq!(r.error_code, 0);
        pid = r.producer_id.0;
        assert!(pid >= 0);
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["a", "b", "c"], Some((pid, 0, 0))))
                .await,
            (0, 0)
        );
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["d"], Some((pid, 0, 3)))).await,
            (0, 3)
        );
        // The same batch again: success with the original offset, not appended twice.
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["a", "b", "c"], Some((pid, 0, 0))))
                .await,
            (0, 0)
        );
        // A gap.
        assert_eq!(
            c.produce(&t, 0, -1, batch(&["g"], Some((pid, 0, 9))))
                .await
                .0,
            45,
            "OUT_OF_ORDER_SEQUENCE_NUMBER"
        );
        // A second producer id is different.
        let r2: InitProducerIdResponse = c
            .call(
                ApiKey::InitProducerId,
                4,
                &InitProducerIdRequest::default()
                    .with_transactional_id(None)
                    .with_producer_id(ProducerId(-1))
                    .with_producer_epoch(-1),
            )
            .await;
        assert_ne!(r2.producer_id.0, pid);
    }
    // kill -9 (the harness's drop) and restart on the same data.
    let broker = Broker::private_on(dir.path(), &[]);
    let mut c = Client::connect(&broker).await;
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["d"], Some((pid, 0, 3)))).await,
        (0, 3),
        "duplicate after restart"
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["e"], Some((pid, 0, 4)))).await,
        (0, 4)
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["f"], Some((pid, 0, 7))))
            .await
            .0,
        45
    );
    // A newer epoch restarts at 0; the old epoch is then fenced.
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["n"], Some((pid, 1, 0)))).await,
        (0, 5)
    );
    assert_eq!(
        c.produce(&t, 0, -1, batch(&["o"], Some((pid, 0, 5))))
            .await
            .0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    let (_, hw, records) = c.fetch(&t, 0, 0, 0).await;
    assert_eq!(hw, 6);
    assert_eq!(values(&records), ["a", "b", "c", "d", "e", "n"]);
    // New producer ids never repeat one handed out before the restart.
    let r: InitProducerIdResponse = c
        .call(
            ApiKey::InitProducerId,
            4,
            &InitProducerIdRequest::default()
                .with_transactional_id(None)
                .with_producer_id(ProducerId(-1))
                .with_producer_epoch(-1),
        )
        .await;
    assert!(r.producer_id.0 > pid + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_acks_all_loses_nothing_acknowledged() {
    if skip_if_external("kill_9_during_acks_all_loses_nothing_acknowledged") {
        return;
    }
    let dir = TempDir::new();
    let t = unique("kcrash");
    let mut broker = Broker::private_on(dir.path(), &[]);
    {
        let mut c = Client::connect(&broker).await;
        c.create_topic(&t, 1, &[]).await;
    }
    // Four producers pipelining acks=all produces; each records what was acknowledged.
    let mut producers = Vec::new();
    for p in 0..4 {
        let mut c = Client::connect(&broker).await;
        let t = t.clone();
        producers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0.. {
                let value = format!("p{p}-{i}");
                let req = produce_req(&t, 0, -1, batch(&[&value], None));
                let cid = c.send(ApiKey::Produce, 9, &req).await;
                let Some(mut frame) = c.read_frame().await else {
                    break;
                };
                let header_version = ApiKey::Produce.response_header_version(9);
                let Ok(h) = ResponseHeader::decode(&mut frame, header_version) else {
                    break;
                };
                let Ok(r) = ProduceResponse::decode(&mut frame, 9) else {
                    break;
                };
                assert_eq!(h.correlation_id, cid);
                if r.responses[0].partition_responses[0].error_code == 0 {
                    acked.push(value);
                }
            }
            acked
        }));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    broker.kill9();
    let mut acked = Vec::new();
    for p in producers {
        acked.extend(within(p).await.expect("producer task"));
    }
    assert!(
        acked.len() > 10,
        "some produces were acknowledged: {}",
        acked.len()
    );
    let broker = Broker::private_on(dir.path(), &[]);
    let mut c = Client::connect(&broker).await;
    let mut stored = std::collections::HashSet::new();
    let mut offset = 0;
    loop {
        let (err, hw, records) = c.fetch(&t, 0, offset, 0).await;
        assert_eq!(err, 0);
        if records.is_empty() {
            assert_eq!(offset, hw);
            break;
        }
        offset = records.last().unwrap().offset + 1;
        stored.extend(values(&records));
    }
    let lost: Vec<&String> = acked.iter().filter(|v| !stored.contains(*v)).collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(5)]
    );
}
