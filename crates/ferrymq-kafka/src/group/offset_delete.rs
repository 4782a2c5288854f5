//! OffsetDelete (key 47): Kafka's `GroupCoordinator.handleDeleteOffsets`. A group that does
//! not exist (or is Dead) is GROUP_ID_NOT_FOUND; an Empty group loses the offsets asked
//! for; a group with members using the consumer protocol keeps the offsets of topics a
//! member subscribes to (GROUP_SUBSCRIBED_TO_TOPIC for those partitions) and loses the
//! others; any other group with members is NON_EMPTY_GROUP. KIP-848 groups are judged by
//! the caller's `kip848` subscription test. Partitions without an offset are answered
//! without error, as in Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::{OffsetDeleteRequest, OffsetDeleteResponse};

use super::offsets::subscribed_topics;
use super::{Coordinator, ExpiredOffset, GroupState};

impl Coordinator {
    /// OffsetDelete. `kip848`: for a KIP-848 group, whether one of its members subscribes
    /// to a topic (false for every topic when it has none). Returns the response and the
    /// offsets removed (to be journaled before the response is sent).
    pub fn offset_delete(
        &mut self,
        r: &OffsetDeleteRequest,
        kip848: Option<&dyn Fn(&str) -> bool>,
    ) -> (OffsetDeleteResponse, Vec<ExpiredOffset>) {
        let id = r.group_id.0.as_str();
        let failed = |e: ResponseError| {
            (
                OffsetDeleteResponse::default().with_error_code(e.code()),
                Vec::new(),
            )
        };
        let subscribed: Box<dyn Fn(&str) -> bool> = match (kip848, self.groups.get(id)) {
            (Some(f), Some(_)) => Box::new(f),
            (_, None) => return failed(ResponseError::GroupIdNotFound),
            (None, Some(g)) => match (g.state, g.protocol_type.as_deref()) {
                (GroupState::Dead, _) => return failed(ResponseError::GroupIdNotFound),
                (GroupState::Empty, _) => Box::new(|_: &str| false),
                (_, Some("consumer")) => {
                    let topics = subscribed_topics(g).unwrap_or_default();
                    Box::new(move |t: &str| topics.contains(t))
                }
                _ => return failed(ResponseError::NonEmptyGroup),
            },
        };
        let mut removed = Vec::new();
        let g = self.groups.get_mut(id).expect("checked above");
        let topics = r
            .topics
            .iter()
            .map(|t| {
                let name = t.name.0.as_str();
                let held = subscribed(name);
                let partitions = t
                    .partitions
                    .iter()
                    .map(|p| {
                        let r = OffsetDeleteResponsePartition::default()
                            .with_partition_index(p.partition_index);
                        if held {
                            return r.with_error_code(ResponseError::GroupSubscribedToTopic.code());
                        }
                        if g.offsets
                            .remove(&(name.to_owned(), p.partition_index))
                            .is_some()
                        {
                            removed.push(ExpiredOffset {
                                group: id.to_owned(),
                                topic: name.to_owned(),
                                partition: p.partition_index,
                            });
                        }
                        r
                    })
                    .collect();
                OffsetDeleteResponseTopic::default()
                    .with_name(t.name.clone())
                    .with_partitions(partitions)
            })
            .collect();
        (OffsetDeleteResponse::default().with_topics(topics), removed)
    }
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::offset_delete_request::{
        OffsetDeleteRequestPartition, OffsetDeleteRequestTopic,
    };
    use kafka_protocol::messages::{GroupId, TopicName};

    use super::super::{sb, Committed, GroupConfig};
    use super::*;

    fn req(group: &str, topics: &[(&str, &[i32])]) -> OffsetDeleteRequest {
        OffsetDeleteRequest::default()
            .with_group_id(GroupId(sb(group)))
            .with_topics(
                topics
                    .iter()
                    .map(|(t, ps)| {
                        OffsetDeleteRequestTopic::default()
                            .with_name(TopicName(sb(t)))
                            .with_partitions(
                                ps.iter()
                                    .map(|p| {
                                        OffsetDeleteRequestPartition::default()
                                            .with_partition_index(*p)
                                    })
                                    .collect(),
                            )
                    })
                    .collect(),
            )
    }

    fn coordinator() -> Coordinator {
        let mut c = Coordinator::new(GroupConfig::default(), 1);
        for (t, p) in [("a", 0), ("a", 1), ("b", 0)] {
            let committed = Committed {
                offset: 5,
                leader_epoch: -1,
                metadata: None,
                commit_timestamp_ms: 0,
            };
            c.restore_offset("g", t, p, committed);
        }
        c
    }

    fn codes(r: &OffsetDeleteResponse) -> Vec<(String, i32, i16)> {
        r.topics
            .iter()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .map(|p| (t.name.0.to_string(), p.partition_index, p.error_code))
            })
            .collect()
    }

    #[test]
    fn unknown_group() {
        let mut c = coordinator();
        let (r, removed) = c.offset_delete(&req("nope", &[("a", &[0])]), None);
        assert_eq!(r.error_code, ResponseError::GroupIdNotFound.code());
        assert!(removed.is_empty());
    }

    #[test]
    fn empty_group_loses_the_offsets_asked_for() {
        let mut c = coordinator();
        let (r, removed) = c.offset_delete(&req("g", &[("a", &[0, 7])]), None);
        assert_eq!(r.error_code, 0);
        assert_eq!(codes(&r), vec![("a".into(), 0, 0), ("a".into(), 7, 0)]);
        assert_eq!(removed.len(), 1);
        assert_eq!((removed[0].topic.as_str(), removed[0].partition), ("a", 0));
        assert!(c.groups["g"].offsets.contains_key(&("a".to_owned(), 1)));
    }

    #[test]
    fn kip848_subscribed_topics_are_kept() {
        let mut c = coordinator();
        let subscribes = |t: &str| t == "a";
        let (r, removed) =
            c.offset_delete(&req("g", &[("a", &[0]), ("b", &[0])]), Some(&subscribes));
        assert_eq!(
            codes(&r),
            vec![
                ("a".into(), 0, ResponseError::GroupSubscribedToTopic.code()),
                ("b".into(), 0, 0)
            ]
        );
        assert_eq!(removed.len(), 1);
        assert!(c.groups["g"].offsets.contains_key(&("a".to_owned(), 0)));
    }
}
