# Peer benchmark input: TensorBoard event files with the same shape as the Kiln run of
# tests/web/bench.mjs (four scalars per step).
# 10^5 steps of four scalars, like a Kiln run logging every step.
import math, random, sys, time
from tensorboard.compat.proto.event_pb2 import Event
from tensorboard.compat.proto.summary_pb2 import Summary
from tensorboard.summary.writer.event_file_writer import EventFileWriter
logdir = sys.argv[1]
w = EventFileWriter(logdir)
t = time.time()
for step in range(1, 100001):
    loss = 1.0 / math.sqrt(step) + random.random() * 0.05
    vals = [Summary.Value(tag='loss', simple_value=loss), Summary.Value(tag='accuracy', simple_value=1 - loss / 2),
            Summary.Value(tag='lr', simple_value=1e-3), Summary.Value(tag='samples_per_sec', simple_value=8000 + random.random() * 500)]
    w.add_event(Event(wall_time=t + step * 1e-3, step=step, summary=Summary(value=vals)))
w.close()
