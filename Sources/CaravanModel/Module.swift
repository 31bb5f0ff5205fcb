// Value types shared by every layer: jobs, groups, tasks, resources, nodes, allocations, evaluations.
//
// This module is declared so the layering of Package.swift is fixed from the start;
// it holds no code until its issue is worked on.
