// Timelines as Chrome trace-event JSON (opens in Perfetto or chrome://tracing).
//
// One process per timeline ("measured", and optionally "predicted" by the simulator), one track
// (thread) per stage, named with the resource it computes on, and one per transfer direction. A span per
// forward, backward, transfer and optimizer step, named "F3" / "B3" / "send activation 3" /
// "optimizer", with the stage and micro-batch in its args.
//
//   write_chrome_trace("run.trace.json", {{"measured", trainer.trace_events()},
//                                         {"predicted (simulator)", predicted.events}});
#pragma once

#include <string>
#include <vector>

#include "scheduler/simulator.h"

namespace pipetrain {

struct Timeline {
  std::string name;
  std::vector<SimEvent> events;  // seconds
};

std::string chrome_trace_json(const std::vector<Timeline>& timelines);

// Writes to `path` through a temporary file and a rename, so a reader never sees half a trace.
// Throws InputError naming the path when it cannot be written.
void write_chrome_trace(const std::string& path, const std::vector<Timeline>& timelines);

}  // namespace pipetrain
