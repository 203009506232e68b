"""One module per DVC stage: a thin `main(argv)` over functions the tests import directly."""
