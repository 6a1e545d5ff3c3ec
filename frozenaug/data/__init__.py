"""Reading a data set (npz, class folders, MedMNIST) into memory-mapped RGB arrays."""
