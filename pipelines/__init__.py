"""The jobs: each module builds one graph (`build_pipeline`) and runs it (`run`)."""
