"""Lightning data modules: store rows into typed batches (StoreDataModule) and on-the-fly augmentation."""
