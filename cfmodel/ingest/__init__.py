"""Reading and cleaning raw input (ratings or events) by prepare's rules, one floor below the stages: the
prepare stage and score's fold-in of newer ratings both read through it."""
