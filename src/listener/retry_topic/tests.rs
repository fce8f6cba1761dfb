//! Unit tests of the retry-topic topology, naming and routing (no I/O).

use super::*;

#[derive(Debug, thiserror::Error)]
#[error("boom")]
struct Boom;

#[derive(Debug, thiserror::Error)]
#[error("fatal")]
struct Fatal;

#[derive(Debug, thiserror::Error)]
#[error("wrapped")]
struct Wrapped(#[source] Fatal);

fn names(t: &RetryTopology) -> Vec<&str> {
    t.retries.iter().map(|r| r.name.as_str()).collect()
}

#[test]
fn topic_names_follow_spring() {
    let fixed = RetryTopicConfiguration::builder().build();
    let t = fixed.topology("orders");
    assert_eq!(names(&t), ["orders-retry"]);
    assert_eq!(t.dlt.as_deref(), Some("orders-dlt"));

    let multi = RetryTopicConfiguration::builder()
        .same_interval_topic_reuse(SameIntervalTopicReuse::MultipleTopics)
        .build();
    assert_eq!(names(&multi.topology("o")), ["o-retry-0", "o-retry-1"]);

    // Spring's default: the trailing retries at the maximum share one topic.
    let exp = |reuse| {
        RetryTopicConfiguration::builder()
            .max_attempts(5)
            .back_off(RetryBackOff::Exponential {
                initial: Duration::from_millis(1000),
                multiplier: 2.0,
                max: Duration::from_millis(4000),
            })
            .same_interval_topic_reuse(reuse)
            .build()
    };
    let single = exp(SameIntervalTopicReuse::SingleTopic).topology("o");
    assert_eq!(
        names(&single),
        ["o-retry-1000", "o-retry-2000", "o-retry-4000"]
    );
    assert_eq!(
        single.retries.iter().map(|r| r.reused).collect::<Vec<_>>(),
        [false, false, true]
    );
    assert_eq!(
        names(&exp(SameIntervalTopicReuse::MultipleTopics).topology("o")),
        [
            "o-retry-1000",
            "o-retry-2000",
            "o-retry-4000-0",
            "o-retry-4000-1"
        ]
    );
    // No delay repeats: one topic per retry either way.
    let distinct = |reuse| {
        RetryTopicConfiguration::builder()
            .max_attempts(4)
            .back_off(RetryBackOff::Exponential {
                initial: Duration::from_millis(1000),
                multiplier: 2.0,
                max: Duration::from_millis(10_000),
            })
            .same_interval_topic_reuse(reuse)
            .build()
            .topology("o")
    };
    for reuse in [
        SameIntervalTopicReuse::SingleTopic,
        SameIntervalTopicReuse::MultipleTopics,
    ] {
        assert_eq!(
            names(&distinct(reuse)),
            ["o-retry-1000", "o-retry-2000", "o-retry-4000"]
        );
    }
    // A single retry topic is `-retry` under SingleTopic, whatever the back-off.
    let one = RetryTopicConfiguration::builder()
        .max_attempts(2)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(1000),
            multiplier: 2.0,
            max: Duration::from_millis(4000),
        })
        .build()
        .topology("o");
    assert_eq!(names(&one), ["o-retry"]);
    assert!(!one.retries[0].reused);
    // Suffixed by index: the trailing topic is still shared.
    let indexed = RetryTopicConfiguration::builder()
        .max_attempts(5)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(1000),
            multiplier: 2.0,
            max: Duration::from_millis(4000),
        })
        .suffixing(TopicSuffixing::ByIndex)
        .build()
        .topology("o");
    assert_eq!(names(&indexed), ["o-retry-0", "o-retry-1", "o-retry-2"]);
    // Equal delays that are not the trailing ones: Spring refuses them under SingleTopic.
    let middle = |reuse| {
        RetryTopicConfiguration::builder()
            .max_attempts(4)
            .back_off(RetryBackOff::Delays(vec![
                Duration::from_millis(100),
                Duration::from_millis(100),
                Duration::from_millis(300),
            ]))
            .same_interval_topic_reuse(reuse)
            .build()
    };
    let refused = middle(SameIntervalTopicReuse::SingleTopic);
    assert!(refused.check(&refused.topology("o")).is_err());
    let multiple = middle(SameIntervalTopicReuse::MultipleTopics);
    let t = multiple.topology("o");
    assert!(multiple.check(&t).is_ok());
    assert_eq!(names(&t), ["o-retry-100-0", "o-retry-100-1", "o-retry-300"]);
    // Spring's ExponentialBackOff truncates each step to whole ms.
    let truncated = RetryTopicConfiguration::builder()
        .max_attempts(4)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(333),
            multiplier: 1.5,
            max: Duration::from_secs(60),
        })
        .build();
    assert_eq!(
        names(&truncated.topology("o")),
        ["o-retry-333", "o-retry-499", "o-retry-748"]
    );
    let by_index = RetryTopicConfiguration::builder()
        .max_attempts(4)
        .back_off(RetryBackOff::Delays(vec![Duration::from_millis(10)]))
        .suffixing(TopicSuffixing::ByIndex)
        .same_interval_topic_reuse(SameIntervalTopicReuse::MultipleTopics)
        .dlt_strategy(DltStrategy::NoDlt)
        .build();
    let t = by_index.topology("o");
    assert_eq!(names(&t), ["o-retry-0", "o-retry-1", "o-retry-2"]);
    assert_eq!(t.dlt, None);
    // The same delays, one topic (Spring's default).
    let shared = RetryTopicConfiguration::builder()
        .max_attempts(4)
        .back_off(RetryBackOff::Delays(vec![Duration::from_millis(10)]))
        .suffixing(TopicSuffixing::ByIndex)
        .build();
    assert_eq!(names(&shared.topology("o")), ["o-retry"]);
}

#[test]
fn destinations_follow_spring() {
    let c = RetryTopicConfiguration::builder()
        .max_attempts(3)
        .back_off(RetryBackOff::Delays(vec![
            Duration::from_millis(100),
            Duration::from_millis(200),
        ]))
        .suffixing(TopicSuffixing::ByIndex)
        .not_retry_on::<Fatal>()
        .timeout(Duration::from_secs(60))
        .build();
    let t = c.topology("o");
    let retry = |topic: &str, ms| Next::Retry {
        topic: topic.into(),
        delay: Duration::from_millis(ms),
    };
    assert_eq!(c.next(&t, "o", 1, &Boom, 0, 10), retry("o-retry-0", 100));
    assert_eq!(
        c.next(&t, "o-retry-0", 2, &Boom, 0, 10),
        retry("o-retry-1", 200)
    );
    assert_eq!(
        c.next(&t, "o-retry-1", 3, &Boom, 0, 10),
        Next::Dlt("o-dlt".into())
    );
    // Not retryable through the cause chain.
    assert_eq!(
        c.next(&t, "o", 1, &Wrapped(Fatal), 0, 10),
        Next::Dlt("o-dlt".into())
    );
    // Past the timeout (Spring: strictly after).
    assert_eq!(
        c.next(&t, "o", 1, &Boom, 0, 60_000),
        retry("o-retry-0", 100)
    );
    assert_eq!(
        c.next(&t, "o", 1, &Boom, 0, 60_001),
        Next::Dlt("o-dlt".into())
    );
    // A failing DLT handler: back to the DLT with a retryable error, dropped otherwise.
    assert_eq!(
        c.next(&t, "o-dlt", 3, &Boom, 0, 10),
        Next::Dlt("o-dlt".into())
    );
    assert_eq!(c.next(&t, "o-dlt", 3, &Fatal, 0, 10), Next::Drop);

    let single = RetryTopicConfiguration::builder().max_attempts(4).build();
    let t = single.topology("o");
    let second = Next::Retry {
        topic: "o-retry".into(),
        delay: Duration::from_secs(1),
    };
    assert_eq!(single.next(&t, "o", 1, &Boom, 0, 0), second);
    assert_eq!(single.next(&t, "o-retry", 3, &Boom, 0, 0), second);
    assert_eq!(
        single.next(&t, "o-retry", 4, &Boom, 0, 0),
        Next::Dlt("o-dlt".into())
    );

    let only = RetryTopicConfiguration::builder()
        .retry_on::<Boom>()
        .dlt_strategy(DltStrategy::FailOnError)
        .build();
    let t = only.topology("o");
    assert!(matches!(
        only.next(&t, "o", 1, &Boom, 0, 0),
        Next::Retry { .. }
    ));
    assert_eq!(
        only.next(&t, "o", 1, &Fatal, 0, 0),
        Next::Dlt("o-dlt".into())
    );
    assert_eq!(only.next(&t, "o-dlt", 3, &Boom, 0, 0), Next::Drop);
}

#[test]
fn trailing_topic_is_reused_until_the_attempts_are_used_up() {
    let c = RetryTopicConfiguration::builder()
        .max_attempts(5)
        .back_off(RetryBackOff::Exponential {
            initial: Duration::from_millis(1000),
            multiplier: 2.0,
            max: Duration::from_millis(4000),
        })
        .build();
    let t = c.topology("o");
    let retry = |topic: &str, ms| Next::Retry {
        topic: topic.into(),
        delay: Duration::from_millis(ms),
    };
    assert_eq!(c.next(&t, "o", 1, &Boom, 0, 0), retry("o-retry-1000", 1000));
    assert_eq!(
        c.next(&t, "o-retry-1000", 2, &Boom, 0, 0),
        retry("o-retry-2000", 2000)
    );
    assert_eq!(
        c.next(&t, "o-retry-2000", 3, &Boom, 0, 0),
        retry("o-retry-4000", 4000)
    );
    assert_eq!(
        c.next(&t, "o-retry-4000", 4, &Boom, 0, 0),
        retry("o-retry-4000", 4000)
    );
    assert_eq!(
        c.next(&t, "o-retry-4000", 5, &Boom, 0, 0),
        Next::Dlt("o-dlt".into())
    );
}

#[derive(Debug, thiserror::Error)]
#[error("invalid")]
struct Invalid;

#[test]
fn dlt_routes_by_error_type_through_the_cause_chain() {
    let c = RetryTopicConfiguration::builder()
        .max_attempts(2)
        .not_retry_on::<Fatal>()
        .dlt_route::<Fatal>("-fatal")
        .dlt_route::<Invalid>("-invalid")
        .dlt_route::<Boom>("-fatal")
        .build();
    let t = c.topology("o");
    assert_eq!(t.routed_dlts, ["o-fatal-dlt", "o-invalid-dlt"]);
    assert_eq!(t.dlt.as_deref(), Some("o-dlt"));
    assert!(t.is_dlt("o-invalid-dlt") && t.is_dlt("o-dlt") && !t.is_dlt("o-retry"));
    // Not retryable, found through the chain: straight to its DLT.
    assert_eq!(
        c.next(&t, "o", 1, &Wrapped(Fatal), 0, 0),
        Next::Dlt("o-fatal-dlt".into())
    );
    // Retryable: retried first, then to the route of its type.
    assert!(matches!(
        c.next(&t, "o", 1, &Invalid, 0, 0),
        Next::Retry { .. }
    ));
    assert_eq!(
        c.next(&t, "o-retry", 2, &Invalid, 0, 0),
        Next::Dlt("o-invalid-dlt".into())
    );
    assert_eq!(
        c.next(&t, "o-retry", 2, &Boom, 0, 0),
        Next::Dlt("o-fatal-dlt".into())
    );
    // A failing handler of a routed DLT: again there when retryable, else on to the DLT.
    assert_eq!(
        c.next(&t, "o-invalid-dlt", 2, &Invalid, 0, 0),
        Next::Dlt("o-invalid-dlt".into())
    );
    assert_eq!(
        c.next(&t, "o-fatal-dlt", 2, &Fatal, 0, 0),
        Next::Dlt("o-dlt".into())
    );
    assert_eq!(c.next(&t, "o-dlt", 2, &Fatal, 0, 0), Next::Drop);

    #[derive(Debug, thiserror::Error)]
    #[error("other")]
    struct Other;
    assert_eq!(
        c.next(&t, "o-retry", 2, &Other, 0, 0),
        Next::Dlt("o-dlt".into())
    );

    let none = RetryTopicConfiguration::builder()
        .dlt_route::<Fatal>("-fatal")
        .dlt_strategy(DltStrategy::NoDlt)
        .build();
    let t = none.topology("o");
    assert!(t.routed_dlts.is_empty() && t.dlt.is_none());
    assert_eq!(
        none.next(&t, "o", 1, &Fatal, 0, 0),
        Next::Retry {
            topic: "o-retry".into(),
            delay: Duration::from_secs(1),
        }
    );
    assert_eq!(none.next(&t, "o-retry", 3, &Fatal, 0, 0), Next::Drop);
}

#[test]
fn random_delays_stay_in_range() {
    let c = RetryTopicConfiguration::builder()
        .back_off(RetryBackOff::UniformRandom {
            min: Duration::from_millis(100),
            max: Duration::from_millis(200),
        })
        .build();
    let t = c.topology("o");
    assert_eq!(names(&t), ["o-retry-0", "o-retry-1"]);
    for _ in 0..100 {
        match c.next(&t, "o", 1, &Boom, 0, 0) {
            Next::Retry { delay, .. } => {
                assert!(delay >= Duration::from_millis(100) && delay <= Duration::from_millis(200))
            }
            other => panic!("{other:?}"),
        }
    }
}
