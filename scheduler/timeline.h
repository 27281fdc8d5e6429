// Measured timelines against the simulator: the executor's spans in, op times and bubbles out.
//
// The executor and the simulator produce the same SimEvent spans, so one function computes the
// bubble of either, and the median op times of measured steps become the StageTiming and
// TransferTiming the simulator replays: "what this schedule should take with these op times",
// printed beside what it took.
//
//   double measured = bubble_fraction(report.events, num_stages);
//   OpTimes times = median_op_times(steps_events, schedule.num_stages, stage_resources, ...);
//   SimResult predicted = simulate(schedule, times.stages, times.transfers, tokens);
#pragma once

#include <string>
#include <vector>

#include "scheduler/simulator.h"

namespace pipetrain {

// 1 - Σ forward and backward time / (num_stages * the span from the first op's start to the last
// backward's end): the fraction of the stages' time spent waiting. 0 for an empty timeline. A stage
// with lanes (one entry per stage; missing: 1) runs that many ops at once: each counts 1 / lanes.
double bubble_fraction(const std::vector<SimEvent>& events, int num_stages, const std::vector<int>& lanes = {});

// From the first op's start to the last backward's end.
double pipeline_seconds(const std::vector<SimEvent>& events);

struct OpTimes {
  std::vector<StageTiming> stages;        // median forward, backward, optimizer seconds per stage
  std::vector<TransferTiming> transfers;  // median send times per boundary (0 and no resource: none seen)
};

// Medians over every span of every step given. The resources name where each op runs, as the
// simulator should queue them (scheduler/cores.h); transfer resources are taken from the spans. A
// layer-major block's span (micro-batch -1) counts as micro_batches ops of an equal share. Stages
// with lanes keep them (StageTiming::lanes), so the replay runs their waves.
OpTimes median_op_times(const std::vector<std::vector<SimEvent>>& steps, int num_stages,
                        const std::vector<std::string>& stage_resources, int micro_batches,
                        const std::vector<int>& lanes = {});

}  // namespace pipetrain
