//! The broker plumbing against a real RabbitMQ (a fresh vhost per test).

use std::time::Duration;

use lapin::BasicProperties;
use lapin::options::{BasicGetOptions, BasicPublishOptions};
use secrecy::SecretString;
use zipkit_runtime::broker::{self, Broker, BrokerSettings, Topology};
use zipkit_test_support::TestBroker;
use zipkit_test_support::process::free_port;

fn settings(url: String) -> BrokerSettings {
    BrokerSettings {
        url: SecretString::from(url),
        queue_prefix: "zipkit".into(),
        connection_name: "zipkit-test".into(),
        reconnect_max_secs: 1,
    }
}

#[tokio::test]
async fn the_topology_is_declared_and_declaring_it_again_is_harmless() {
    let vhost = TestBroker::new().await;
    let (first, _) = broker::connect(&settings(vhost.url()))
        .await
        .expect("first declaration");
    let (second, _) = broker::connect(&settings(vhost.url()))
        .await
        .expect("second declaration with the same arguments");
    let mut names: Vec<String> = vhost
        .queues()
        .await
        .into_iter()
        .map(|(name, _)| name)
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["zipkit.jobs", "zipkit.jobs.dead", "zipkit.jobs.retry"]
    );
    first.close(200, "done".into()).await.unwrap();
    second.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn a_message_expiring_in_the_retry_queue_returns_to_the_jobs_queue() {
    let vhost = TestBroker::new().await;
    let (connection, channel) = broker::connect(&settings(vhost.url())).await.unwrap();
    let topology = Topology::new("zipkit");
    channel
        .basic_publish(
            "".into(),
            topology.retry.as_str().into(),
            BasicPublishOptions::default(),
            b"{\"retry\":1}",
            BasicProperties::default().with_expiration("50".into()),
        )
        .await
        .unwrap()
        .await
        .unwrap();

    let mut delivered = None;
    for _ in 0..100 {
        delivered = channel
            .basic_get(
                topology.jobs.as_str().into(),
                BasicGetOptions { no_ack: true },
            )
            .await
            .unwrap();
        if delivered.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let message = delivered.expect("the expired message came back to the jobs queue");
    assert_eq!(message.delivery.data, b"{\"retry\":1}");
    connection.close(200, "done".into()).await.unwrap();
}

#[tokio::test]
async fn the_supervised_connection_comes_up_and_reports_a_dead_broker_as_down() {
    let vhost = TestBroker::new().await;
    let live = Broker::start(settings(vhost.url()));
    assert!(
        live.wait_connected(Duration::from_secs(10)).await,
        "connects to the test vhost"
    );
    assert!(live.channel().is_some());

    let dead = Broker::start(settings(format!(
        "amqp://guest:guest@127.0.0.1:{}/%2f",
        free_port()
    )));
    assert!(!dead.wait_connected(Duration::from_millis(800)).await);
    assert!(dead.channel().is_none());

    live.close().await;
    assert!(!live.is_connected(), "closed means not connected");
    dead.close().await;
}
