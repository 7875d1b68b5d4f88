/* The step for any CPU (baseline instruction set). */
#define KD_ENTRY kd_run_base
#include "_kernel_body.h"
