//! Positions: seeks (by offset, timestamp, from the end), pause and resume, committed
//! offsets and watermarks.

use super::*;

impl Consumer {
    /// Moves `tp`'s position to `offset`: the next record returned for it is the one at
    /// `offset` (buffered records of the partition are dropped). Other partitions are not
    /// touched.
    pub fn seek(&self, tp: &TopicPartition, offset: i64) -> Result<()> {
        if offset < 0 {
            return Err(Error::config(format!("seek offset {offset} is negative")));
        }
        self.with_part(tp, |p, b| p.reset(StartOffset::Offset(offset), b))
    }

    /// Moves each partition to the beginning of its log (resolved lazily).
    pub fn seek_to_beginning(&self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.with_part(tp, |p, b| p.reset(StartOffset::Beginning, b))?;
        }
        Ok(())
    }

    /// Moves each partition to the end of its log (resolved lazily).
    pub fn seek_to_end(&self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.with_part(tp, |p, b| p.reset(StartOffset::End, b))?;
        }
        Ok(())
    }

    /// Moves each partition to the first record whose timestamp is at or after `timestamp`
    /// (milliseconds since the epoch), resolved lazily with ListOffsets like
    /// [`seek_to_beginning`](Self::seek_to_beginning); to the end of the log when every record
    /// is older (Spring's `seekToTimestamp`; Java's `offsetsForTimes` then `seek`).
    ///
    /// ```no_run
    /// # async fn demo(consumer: &rekafka::consumer::Consumer) -> rekafka::Result<()> {
    /// use std::time::{Duration, SystemTime, UNIX_EPOCH};
    /// // Replay the last hour of every assigned partition.
    /// let hour_ago = SystemTime::now() - Duration::from_secs(3600);
    /// let ms = hour_ago.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    /// consumer.seek_to_timestamp(&consumer.assignment(), ms)?;
    /// # Ok(()) }
    /// ```
    pub fn seek_to_timestamp(&self, tps: &[TopicPartition], timestamp: i64) -> Result<()> {
        if timestamp < 0 {
            return Err(Error::config(format!(
                "seek timestamp {timestamp} is negative"
            )));
        }
        for tp in tps {
            self.with_part(tp, |p, b| p.reset(StartOffset::Timestamp(timestamp), b))?;
        }
        Ok(())
    }

    /// Moves each partition `n` records back from the end of its log (the end as the isolation
    /// level sees it: the last stable offset under read_committed), never before the log's
    /// start; resolved lazily. `n = 0` is [`seek_to_end`](Self::seek_to_end). kcat's `-o -N`,
    /// Spring's `seekRelative(.., -n, false)`.
    pub fn seek_from_end(&self, tps: &[TopicPartition], n: u64) -> Result<()> {
        for tp in tps {
            self.with_part(tp, |p, b| p.reset(StartOffset::FromEnd(n), b))?;
        }
        Ok(())
    }

    /// The offset of the next record `poll` returns for `tp`; waits (up to the API timeout)
    /// for a position being resolved.
    pub async fn position(&self, tp: &TopicPartition) -> Result<i64> {
        let deadline = Instant::now() + self.core.shared.config.api_timeout;
        loop {
            let (pos, err) = self.with_part(tp, |p, _| (p.position, p.error.clone()))?;
            if let Some(pos) = pos {
                return Ok(pos);
            }
            if let Some(e) = err {
                return Err(e);
            }
            if Instant::now() >= deadline {
                return Err(Error::with_message(
                    ErrorKind::Timeout,
                    format!("the position of {tp} was not resolved in time"),
                ));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Pauses `tps`: they are not fetched and `poll` returns none of their records until
    /// [`resume`](Self::resume). Positions and buffers are kept.
    pub fn pause(&self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.with_part(tp, |p, _| p.paused = true)?;
        }
        Ok(())
    }

    /// Resumes paused partitions.
    pub fn resume(&self, tps: &[TopicPartition]) -> Result<()> {
        for tp in tps {
            self.with_part(tp, |p, _| p.paused = false)?;
        }
        self.core.shared.data_ready.notify_one();
        Ok(())
    }

    /// The paused partitions.
    pub fn paused(&self) -> Vec<TopicPartition> {
        lock(&self.core.shared.state)
            .parts
            .iter()
            .filter(|(_, p)| p.paused)
            .map(|(tp, _)| tp.clone())
            .collect()
    }

    /// The group's committed offsets for `tps` (`None` where nothing is committed).
    pub async fn committed(
        &self,
        tps: &[TopicPartition],
    ) -> Result<HashMap<TopicPartition, Option<OffsetAndMetadata>>> {
        self.member()?.committed(tps).await
    }

    /// The low and high watermarks of `tp` from the broker (ListOffsets earliest and latest;
    /// with `read_committed` the latest is the last stable offset).
    ///
    /// Like Java's `beginningOffsets`/`endOffsets`, retriable errors (a leader that moved,
    /// `OFFSET_NOT_AVAILABLE` while a new leader catches up, a topic not yet known everywhere)
    /// are retried after `retry.backoff.ms`, with fresh metadata, until
    /// `default.api.timeout.ms` has passed; then the last error is returned.
    pub async fn fetch_watermarks(&self, tp: &TopicPartition) -> Result<(i64, i64)> {
        let config = &self.core.shared.config;
        let deadline = Instant::now() + config.api_timeout;
        let mut out = [0i64; 2];
        for (i, ts) in [-2i64, -1].into_iter().enumerate() {
            out[i] = loop {
                self.check_open()?;
                let r = fetcher::list_offsets(
                    &self.core.shared.cluster,
                    config.isolation_level,
                    &[(tp.clone(), ts)],
                )
                .await
                .and_then(|m| {
                    m.get(tp).cloned().unwrap_or_else(|| {
                        Err(Error::new(ErrorKind::UnexpectedResponse)
                            .on_partition(tp.topic(), tp.partition))
                    })
                });
                match r {
                    Err(e) if e.is_retriable() && Instant::now() < deadline => {
                        tracing::debug!(%tp, error = %e, "watermark lookup failed; retrying");
                        tokio::time::sleep(config.retry_backoff).await;
                    }
                    r => break r?,
                }
            };
        }
        Ok((out[0], out[1]))
    }

    /// The high watermark, last stable offset and log start offset of `tp` from the latest
    /// fetch response, if one came.
    pub fn cached_watermarks(
        &self,
        tp: &TopicPartition,
    ) -> Option<(i64, Option<i64>, Option<i64>)> {
        let st = lock(&self.core.shared.state);
        let p = st.parts.get(tp)?;
        p.high_watermark
            .map(|h| (h, p.last_stable_offset, p.log_start_offset))
    }
}
