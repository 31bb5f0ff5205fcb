// Task drivers, supervision with libuv, cgroups and logs. Built under the executor issue.
//
// This module is declared so the layering of Package.swift is fixed from the start;
// it holds no code until its issue is worked on.
