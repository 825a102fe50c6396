__attribute__((constructor)) static void die(void) { __builtin_trap(); }
