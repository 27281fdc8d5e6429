// SIGINT and SIGTERM stop a run at the next step boundary instead of killing it mid-write.
//
// The first signal only sets a flag (and says so on stderr): the trainer finishes or abandons the
// step it is in, saves a checkpoint and exits. A second SIGINT exits at once (status 130): files
// are never left half-written, because metrics are flushed line by line and checkpoints and traces
// are renamed into place whole.
//
//   StopSignals::install();
//   while (...) { step(); if (StopSignals::requested()) { save(); return StopSignals::exit_status(); } }
#pragma once

namespace pipetrain {

struct StopSignals {
  static void install();
  static bool requested();
  static int signal_number();  // 0 when none arrived
  static int exit_status();    // 128 + the signal, as a shell reports it
};

}  // namespace pipetrain
