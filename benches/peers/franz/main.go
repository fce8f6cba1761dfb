// Command franz is the franz-go peer of the benches/peers harness: it produces or consumes a
// fixed number of records with github.com/twmb/franz-go/pkg/kgo at the library's defaults,
// apart from what the workload fixes, and prints one line:
//
//	records=N secs=S rec_per_s=R mb_per_s=M
//
// Usage:
//
//	franz produce -b HOST:PORT,... -t TOPIC -n COUNT -s VALUE_BYTES [-acks all|1|0] [-z none|gzip|snappy|lz4|zstd] [-keys K]
//	franz consume -b HOST:PORT,... -t TOPIC -n COUNT
//	franz latency -b HOST:PORT,... -t TOPIC -r RATE -d SECONDS -s VALUE_BYTES
//
// produce sends COUNT records whose value is VALUE_BYTES of 'x' (the same payload as
// `rekafka perf produce`), with no key unless -keys K > 0 (then record i has the key i % K as
// decimal text, as with `rekafka perf produce --keys K`), and exits 1 if any record failed.
// -z is passed only when given, so franz-go's own default codec applies otherwise. consume reads every partition of TOPIC from the start
// without a group (direct partition consumption, like `rekafka perf consume` and kcat -C) until
// COUNT records have arrived; it fails after 10 s without records. latency is the end-to-end
// latency workload of examples/peers_latency.rs (same schedule, value layout, warm-up and
// output line): one client consumes every partition of a fresh TOPIC from the start while it
// produces RATE records/s for SECONDS s, each value starting with its send time (ns since the
// Unix epoch, big-endian); records sent in the first second are left out.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

func main() {
	if len(os.Args) < 2 || (os.Args[1] != "produce" && os.Args[1] != "consume" && os.Args[1] != "latency") {
		fmt.Fprintln(os.Stderr, "usage: franz produce|consume|latency -b BROKERS -t TOPIC [-n COUNT] [-s BYTES] [-acks all|1|0] [-z CODEC] [-keys K] [-r RATE -d SECONDS]")
		os.Exit(2)
	}
	mode := os.Args[1]
	fs := flag.NewFlagSet(mode, flag.ExitOnError)
	brokers := fs.String("b", os.Getenv("REKAFKA_BOOTSTRAP"), "bootstrap brokers host:port,...")
	topic := fs.String("t", "", "topic")
	count := fs.Int64("n", 1000000, "records")
	size := fs.Int("s", 100, "value bytes (produce)")
	acks := fs.String("acks", "", "all, 1 or 0 (produce; default: franz-go's)")
	codec := fs.String("z", "", "none, gzip, snappy, lz4, zstd (produce; default: franz-go's)")
	keys := fs.Int("keys", 0, "distinct keys, 0 = no key (produce)")
	rate := fs.Int64("r", 10000, "records per second (latency)")
	secs := fs.Int64("d", 30, "seconds (latency)")
	if err := fs.Parse(os.Args[2:]); err != nil {
		os.Exit(2)
	}
	if *topic == "" || *brokers == "" || *count <= 0 {
		fmt.Fprintln(os.Stderr, "error: -b, -t and -n > 0 are required")
		os.Exit(2)
	}
	opts := []kgo.Opt{kgo.SeedBrokers(strings.Split(*brokers, ",")...)}
	var err error
	if mode == "latency" {
		err = latency(opts, *topic, *rate, *secs, *size)
	} else if mode == "produce" {
		err = produce(opts, *topic, *count, *size, *acks, *codec, *keys)
	} else {
		err = consume(opts, *topic, *count)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
}

func produce(opts []kgo.Opt, topic string, count int64, size int, acks, codec string, keys int) error {
	switch acks {
	case "":
	case "all", "-1":
		opts = append(opts, kgo.RequiredAcks(kgo.AllISRAcks()))
	case "1":
		opts = append(opts, kgo.RequiredAcks(kgo.LeaderAck()), kgo.DisableIdempotentWrite())
	case "0":
		opts = append(opts, kgo.RequiredAcks(kgo.NoAck()), kgo.DisableIdempotentWrite())
	default:
		return fmt.Errorf("bad -acks %q", acks)
	}
	switch codec {
	case "":
	case "none":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.NoCompression()))
	case "gzip":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.GzipCompression()))
	case "snappy":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.SnappyCompression()))
	case "lz4":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.Lz4Compression()))
	case "zstd":
		opts = append(opts, kgo.ProducerBatchCompression(kgo.ZstdCompression()))
	default:
		return fmt.Errorf("bad -z %q", codec)
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	value := []byte(strings.Repeat("x", size))
	keyBytes := make([][]byte, keys)
	for i := range keyBytes {
		keyBytes[i] = []byte(strconv.Itoa(i))
	}
	var failed atomic.Int64
	var firstErr atomic.Value
	done := func(_ *kgo.Record, err error) {
		if err != nil {
			if failed.Add(1) == 1 {
				firstErr.Store(err)
			}
		}
	}
	ctx := context.Background()
	start := time.Now()
	for i := int64(0); i < count; i++ {
		r := &kgo.Record{Topic: topic, Value: value}
		if keys > 0 {
			r.Key = keyBytes[i%int64(keys)]
		}
		cl.Produce(ctx, r, done)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	secs := time.Since(start).Seconds()
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d records failed; first: %v", n, firstErr.Load())
	}
	report(count, int64(size)*count, secs)
	return nil
}

func consume(opts []kgo.Opt, topic string, count int64) error {
	opts = append(opts,
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	var n, bytes int64
	start := time.Now()
	idle := time.Now()
	for n < count {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		fetches := cl.PollFetches(ctx)
		cancel()
		for _, e := range fetches.Errors() {
			if errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, context.Canceled) {
				continue
			}
			return fmt.Errorf("%s[%d]: %w", e.Topic, e.Partition, e.Err)
		}
		got := int64(0)
		fetches.EachRecord(func(r *kgo.Record) {
			got++
			bytes += int64(len(r.Key) + len(r.Value))
		})
		if got == 0 {
			if time.Since(idle) > 10*time.Second {
				return fmt.Errorf("only %d of %d records arrived (idle for 10 s)", n, count)
			}
			continue
		}
		idle = time.Now()
		n += got
	}
	report(n, bytes, time.Since(start).Seconds())
	return nil
}

func report(n, bytes int64, secs float64) {
	fmt.Printf("records=%d secs=%.3f rec_per_s=%.0f mb_per_s=%.2f\n", n, secs, float64(n)/secs, float64(bytes)/secs/1e6)
}

func nowNs() uint64 { return uint64(time.Now().UnixNano()) }

func latency(opts []kgo.Opt, topic string, rate, secs int64, size int) error {
	if rate <= 0 || secs < 2 || size < 8 {
		return fmt.Errorf("latency needs -r > 0, -d >= 2, -s >= 8")
	}
	opts = append(opts,
		kgo.RequiredAcks(kgo.AllISRAcks()),
		kgo.ConsumeTopics(topic),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
	)
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return err
	}
	defer cl.Close()
	total := rate * secs
	// Records sent before warmUntil are warm-up; it is set when producing starts.
	var warmUntil atomic.Uint64
	warmUntil.Store(math.MaxUint64)
	type result struct {
		lat []uint64
		err error
	}
	done := make(chan result, 1)
	go func() {
		lat := make([]uint64, 0, total)
		n, idle := int64(0), time.Now()
		for n < total {
			ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
			fetches := cl.PollFetches(ctx)
			cancel()
			for _, e := range fetches.Errors() {
				if errors.Is(e.Err, context.DeadlineExceeded) || errors.Is(e.Err, context.Canceled) {
					continue
				}
				done <- result{err: fmt.Errorf("%s[%d]: %w", e.Topic, e.Partition, e.Err)}
				return
			}
			if fetches.NumRecords() == 0 {
				if time.Since(idle) > 10*time.Second {
					done <- result{err: fmt.Errorf("only %d of %d records arrived", n, total)}
					return
				}
				continue
			}
			idle = time.Now()
			now := nowNs()
			bad := false
			fetches.EachRecord(func(r *kgo.Record) {
				n++
				if len(r.Value) < 8 {
					bad = true
					return
				}
				if sent := binary.BigEndian.Uint64(r.Value[:8]); sent >= warmUntil.Load() {
					if now > sent {
						lat = append(lat, now-sent)
					} else {
						lat = append(lat, 0)
					}
				}
			})
			if bad {
				done <- result{err: fmt.Errorf("a record without a send time")}
				return
			}
		}
		done <- result{lat: lat}
	}()
	var failed atomic.Int64
	var firstErr atomic.Value
	promise := func(_ *kgo.Record, err error) {
		if err != nil && failed.Add(1) == 1 {
			firstErr.Store(err)
		}
	}
	pad := []byte(strings.Repeat("x", size-8))
	ctx := context.Background()
	warmUntil.Store(nowNs() + 1_000_000_000)
	start := time.Now()
	for i := int64(0); i < total; i++ {
		due := start.Add(time.Duration(i * int64(time.Second) / rate))
		if d := time.Until(due); d > 0 {
			time.Sleep(d)
		}
		v := make([]byte, 8, size)
		binary.BigEndian.PutUint64(v, nowNs())
		v = append(v, pad...)
		cl.Produce(ctx, &kgo.Record{Topic: topic, Value: v}, promise)
	}
	if err := cl.Flush(ctx); err != nil {
		return err
	}
	if n := failed.Load(); n > 0 {
		return fmt.Errorf("%d records failed; first: %v", n, firstErr.Load())
	}
	elapsed := time.Since(start).Seconds()
	res := <-done
	if res.err != nil {
		return res.err
	}
	lat := res.lat
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		if len(lat) == 0 {
			return math.NaN()
		}
		rank := int(math.Ceil(p * float64(len(lat))))
		if rank < 1 {
			rank = 1
		}
		if rank > len(lat) {
			rank = len(lat)
		}
		return float64(lat[rank-1]) / 1e6
	}
	fmt.Printf("records=%d measured=%d secs=%.3f rate=%.0f p50_ms=%.2f p99_ms=%.2f p999_ms=%.2f max_ms=%.2f\n",
		total, len(lat), elapsed, float64(total)/elapsed, pct(0.5), pct(0.99), pct(0.999), pct(1))
	return nil
}
