"""The Kaggle Carvana competition: access to its API and the files it ships."""
