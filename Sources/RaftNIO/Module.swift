// The Raft write-ahead log, snapshots on disk and the sealed TCP transport. Built under the Raft issue.
//
// This module is declared so the layering of Package.swift is fixed from the start;
// it holds no code until its issue is worked on.
