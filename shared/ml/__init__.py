"""The ML runtime: feature building, versioned model artifacts, compiled trees and the cost
model's shape."""
