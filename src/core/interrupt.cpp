#include "singleinsert/core/interrupt.h"

#include <atomic>
#include <csignal>
#include <cstdlib>

namespace singleinsert {
namespace {

std::atomic<bool> requested{false};

extern "C" void on_interrupt(int) {
  if (requested.exchange(true)) std::_Exit(130);  // the second Ctrl-C does not wait
}

}  // namespace

void install_interrupt_handler() {
  struct sigaction action {};
  action.sa_handler = on_interrupt;
  sigemptyset(&action.sa_mask);
  sigaction(SIGINT, &action, nullptr);
  sigaction(SIGTERM, &action, nullptr);
}

bool interrupt_requested() { return requested.load(); }

void clear_interrupt() { requested = false; }

}  // namespace singleinsert
