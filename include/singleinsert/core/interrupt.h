#pragma once
// Cooperative Ctrl-C: a SIGINT handler sets a flag that long loops poll between steps, so they
// can save their state and stop cleanly. A second Ctrl-C ends the process at once.
namespace singleinsert {

void install_interrupt_handler();
bool interrupt_requested();
void clear_interrupt();

}  // namespace singleinsert
