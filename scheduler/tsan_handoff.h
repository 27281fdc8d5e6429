// Happens-before edges for ThreadSanitizer that oneTBB creates inside libtbb.so.
//
// Debian's libtbb is not built with -fsanitize=thread, so TSan cannot see that a task spawned by one
// thread runs after the spawn, that a message put to a flow-graph node is read after the put, or
// that wait_for_all returns after every body. Without these edges every hand-off the executor makes
// looks like a race (about 600 reports per test run). The executor states the edges it relies on
// here: a sender releases a key just before it hands a message on and the receiver acquires the
// same key first thing, so races between bodies that oneTBB does NOT order (two stages touching the
// same data at once) are still reported. Outside a TSan build these compile to nothing.
//
//   tsan::release(&key);  node.try_put(msg);      // sender
//   tsan::acquire(&key);  ... use what was sent   // receiver
#pragma once

#if defined(__SANITIZE_THREAD__)
#define PIPETRAIN_TSAN 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define PIPETRAIN_TSAN 1
#endif
#endif

#ifdef PIPETRAIN_TSAN
extern "C" void __tsan_acquire(void* addr);
extern "C" void __tsan_release(void* addr);
#endif

namespace pipetrain::tsan {

#ifdef PIPETRAIN_TSAN
inline void acquire(const void* key) { __tsan_acquire(const_cast<void*>(key)); }
inline void release(const void* key) { __tsan_release(const_cast<void*>(key)); }
#else
inline void acquire(const void*) {}
inline void release(const void*) {}
#endif

}  // namespace pipetrain::tsan
