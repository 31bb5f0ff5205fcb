// The replicated state machine (jobs, nodes, allocations, evaluations). Built under the cluster state and scheduler issue.
//
// This module is declared so the layering of Package.swift is fixed from the start;
// it holds no code until its issue is worked on.
