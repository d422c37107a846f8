"""The data tools: NYC TLC trip files and the zone table, the taxi meter's rule, and the ride
simulator fitted to real trips."""
