// The Raft consensus core (etcd style: tick, step, propose, ready, advance), pure and without IO. Built under the Raft issue.
//
// This module is declared so the layering of Package.swift is fixed from the start;
// it holds no code until its issue is worked on.
